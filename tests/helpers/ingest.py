"""Ingest helpers shared by test modules: an ingested home, a kill that lands mid-run, and the
processes still alive of a home's ingest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

SALT = "test-salt-shared-by-both-homes"  # the pseudonym salt of the ingest tests' homes


def ingested_home(home, archive, model, salt: str):
    """Ingest ``archive`` with ``model`` into the embedded store under ``home`` (REGIONMIR_HOME)."""
    from regionmir.ingest.runner import IngestConfig, run_ingest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGIONMIR_HOME", str(home))
        mp.setenv("REGIONMIR_SALT", salt)
        mp.delenv("QDRANT_URL", raising=False)
        run_ingest(IngestConfig(archive, model, workers=0))
    return home


def kill_when_ledger_has(proc, home, lines: int = 2, timeout: float = 240, reap: bool = True) -> int:
    """SIGKILL ``proc`` (an ingest) once a ledger under ``home`` lists ``lines`` images; wait for it
    unless ``reap`` is False (the killed ingest then stays a zombie, as under a parent still
    reading its pipes).

    Returns how many images the ledger listed at the kill (fewer when the run ended first).
    """
    import os
    import signal

    ledgers, n_done, deadline = Path(home) / "ledgers", 0, time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        files = list(ledgers.glob("*.done")) if ledgers.is_dir() else []
        n_done = len(files[0].read_text().splitlines()) - 1 if files else 0
        if n_done >= lines:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    if reap:
        proc.wait(timeout=60)
    return n_done


def proc_dirs_with_env(key: str, value: str):
    """The /proc folders of processes whose environment has ``key=value`` (readable ones)."""
    needle = f"{key}={value}".encode()
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in env.read_bytes().split(b"\0"):
                yield env.parent
        except OSError:  # gone meanwhile, or not ours to read
            continue


def processes_with_env(key: str, value: str, wait_s: float) -> list[str]:
    """Command lines of live processes whose environment has ``key=value``, after up to ``wait_s``.

    Zombies (dead, waiting for their parent to reap them) are not counted: they hold nothing.
    """
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for proc in proc_dirs_with_env(key, value):
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if cmd and "(zombie)" not in (proc / "status").read_text():
                    found.append(f"{proc.name}: {cmd[:120]}")
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
