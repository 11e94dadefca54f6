"""Ingest worker processes: prepare images in a forkserver pool, in order, with bounded read-ahead.

Each worker runs a :class:`~regionmir.ingest.stages.Preparer` (decode, find regions, crop,
and encode on CPU machines) on one BLAS thread, and dies with the ingest even after ``kill -9``,
also while the killed ingest is a zombie its parent has not reaped yet: none of the helper
processes (fork server, resource tracker, workers) outlives it or holds its stdout/stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from regionmir.errors import RegionMIRError
from regionmir.ingest.stages import ImageTask, Prepared, Preparer, Skipped


def prepared_stream(preparer: Preparer, tasks: Sequence[ImageTask], workers: int) -> Iterator[Prepared | Skipped]:
    """Results of ``preparer`` over ``tasks`` in order, ``workers`` processes ahead of the consumer."""
    if workers <= 0:
        yield from map(preparer, tasks)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    window = 4 * workers + 4  # bounded read-ahead: memory stays flat on big archives
    ctx = mp.get_context("forkserver")
    # Import what every worker needs once, in the fork server, before it forks them: each
    # worker then starts without ~0.4 s of imports (no effect when the server already runs).
    ctx.set_forkserver_preload(["regionmir.ingest.workers", "regionmir.dicom", "regionmir.inference.encoder", "onnxruntime"])
    args = (preparer, os.getpid())
    _start_helpers()
    with _one_blas_thread(), ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                  initargs=args) as pool:
        pending: deque = deque()
        it = iter(tasks)
        for task in it:
            pending.append(pool.submit(_run_worker, task))
            if len(pending) >= window:
                break
        while pending:
            try:
                result = pending.popleft().result()
            except BrokenProcessPool:
                raise RegionMIRError(
                    "A decode worker process died (killed by the system, perhaps for memory: see `dmesg`). "
                    "Everything stored so far is in the ledger: rerun the same command to go on, with "
                    "fewer --workers if memory is short."
                ) from None
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_run_worker, nxt))
            yield result


@contextmanager
def _one_blas_thread():
    """Worker processes started inside get one BLAS/OpenMP thread each: ``workers`` processes
    already fill the cores, and a second BLAS thread per process only waits at barriers
    (crop_regions' small matrix products ran 5x slower with two on a busy 2-core machine)."""
    keys = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_helpers() -> None:
    """Start multiprocessing's fork server (and its resource tracker) with stdout and stderr on
    /dev/null, unless they run already.

    They inherit the ingest's standard streams otherwise: a caller that reads the ingest's
    pipes to the end (``subprocess.run(capture_output=True)``) would wait for them too, and
    any of them stuck after a ``kill -9`` would hang that caller. Workers print nothing the
    user needs: what goes wrong with an image is in the report, a dead worker is said by the
    ingest itself.
    """
    from multiprocessing import forkserver

    with _stdio_on_devnull():
        forkserver.ensure_running()  # starts the resource tracker first


@contextmanager
def _stdio_on_devnull():
    """File descriptors 1 and 2 of this process on /dev/null within the block (children started
    there inherit that), restored after."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    saved = (os.dup(1), os.dup(2))
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


_WORKER: Preparer | None = None


def _init_worker(preparer: Preparer, parent: int) -> None:
    global _WORKER
    _WORKER = preparer
    _let_the_fork_server_go()
    die_with(parent)


def _let_the_fork_server_go() -> None:
    """Close this worker's copy of the fork server's "alive" pipe (the write end the ingest holds).

    The fork server exits when that pipe reaches end-of-file, which happens when the ingest's
    copy closes, by exit or ``kill -9``, even while the dead ingest waits, a zombie, for its
    parent to reap it. multiprocessing hands every worker a copy too, and while workers hold one
    the fork server never sees the end: workers, fork server and resource tracker then lived on
    together after a ``kill -9``, holding the caller's pipes.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None


def die_with(parent: int, poll_s: float = 0.5) -> None:
    """End this worker process when process ``parent`` (the ingest) ends, even by ``kill -9``.

    A pool worker's own parent is multiprocessing's fork server, which exits when the ingest
    does (see :func:`_let_the_fork_server_go`): on Linux the kernel then kills the worker
    (PR_SET_PDEATHSIG). Everywhere, a daemon thread also checks every ``poll_s`` seconds that
    the worker still has the parent it started with and that ``parent`` is alive; a zombie
    still answers ``os.kill(parent, 0)``, so the first check is the one that sees a killed
    ingest nobody has reaped.
    """
    import signal
    import threading
    import time

    started_by = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # no libc symbol: the thread below still watches
            pass

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != started_by:  # the fork server is gone: we were handed to init
                os._exit(1)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, owned by someone else: cannot happen for our parent
                pass

    threading.Thread(target=watch, name="regionmir-parent-watch", daemon=True).start()


def _run_worker(task: ImageTask) -> Prepared | Skipped:
    return _WORKER(task)
