"""Ingest sources for a PACS: what to ingest (plan), getting it onto disk (feed), letting it go (release).

:func:`regionmir.ingest.runner.run_ingest` takes one of these instead of walking a folder. Both
name an image by its SOPInstanceUID (``image_id``, the ledger key, the point id seed) and
give it the payload ``path`` ``studies/<uid>/series/<uid>/instances/<uid>``: the WADO-RS
path of the instance relative to the DICOMweb service root, which a viewer can open.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from regionmir.errors import PacsError
from regionmir.ingest.sources import shard_of
from regionmir.ingest.stages import ImageTask, Skipped
from regionmir.pacs.dicomweb import (
    InstanceRef,
    Query,
    connect,
    find_instances,
    retrieve,
)
from regionmir.pacs.spool import Spool

if TYPE_CHECKING:
    from regionmir.ingest.ledger import Ledger

log = logging.getLogger("regionmir")


def _task(path: Path, ref: InstanceRef) -> ImageTask:
    return ImageTask(path, ref.path, ref.sop_uid)


class SpoolSource:
    """The files waiting in a :class:`Spool` (what `regionmir listen` received).

    It holds no scene graphs: the localizer places the boxes.
    """

    archive_root = None  # payload paths are WADO-RS paths

    def __init__(self, spool: Spool):
        self.spool = spool
        self.annotations = spool.root

    def plan(self, shard: tuple[int, int], ledger: Ledger) -> tuple[list[ImageTask], int]:
        """Spooled files not yet in the ledger; those already there are removed and counted."""
        i, n = shard
        todo, finished = [], []
        for path, ref in self.spool.pending():
            if shard_of(ref.sop_uid, n) != i:
                continue
            task = _task(path, ref)
            (finished if ledger.has(task) else todo).append(task)
        self.spool.remove(t.path for t in finished)  # ingested before a crash, not yet removed
        return todo, len(finished)

    def feed(self, tasks: Sequence[ImageTask], on_skip: Callable[[Skipped], None]) -> Iterator[ImageTask]:
        """The tasks as they are: their files are on disk already."""
        return iter(tasks)

    def release(self, tasks: Iterable[ImageTask]) -> None:
        """Remove files that are in the ledger or in the report."""
        self.spool.remove(t.path for t in tasks)

    def close(self) -> None:
        """Nothing to free: the spool keeps what was not ingested for the next pass."""


class DicomWebSource:
    """CR/DX instances of a DICOMweb service: QIDO-RS plans, WADO-RS fetches into a spool folder.

    ``fetchers`` threads retrieve ahead of the decode workers (at most ``window`` files on disk
    beyond what the pipeline holds); files are removed once their batch is in the ledger.
    Boxes come from scene graphs in ``annotations`` (``<SOPInstanceUID>_SceneGraph.json``);
    without it, from the spool folder, which holds none: the localizer places them.
    """

    archive_root = None  # payload paths are WADO-RS paths

    def __init__(self, url: str, query: Query, spool: Spool, fetchers: int = 4, window: int = 32,
                 annotations: Path | None = None):
        self.client = connect(url)  # one requests session, shared by the fetch threads (GETs only)
        self.query = query
        self.spool = spool
        self.fetchers = fetchers
        self.window = window
        self.annotations = Path(annotations) if annotations else spool.root

    def plan(self, shard: tuple[int, int], ledger: Ledger) -> tuple[list[ImageTask], int]:
        """Instances of ``shard`` not in the ledger, and how many the ledger skips.

        Raises:
            PacsError: the service cannot be searched.
        """
        self._clear()  # files of a killed run: not in the ledger, so fetched again below
        i, n = shard
        tasks = [_task(self.spool.path(r), r) for r in find_instances(self.client, self.query)
                 if shard_of(r.sop_uid, n) == i]
        todo = [t for t in tasks if not ledger.has(t)]
        return todo, len(tasks) - len(todo)

    def feed(self, tasks: Sequence[ImageTask], on_skip: Callable[[Skipped], None]) -> Iterator[ImageTask]:
        """Each task once its instance is on disk, in order; a failed retrieve goes to ``on_skip``."""
        with ThreadPoolExecutor(self.fetchers, thread_name_prefix="wado") as pool:
            pending: deque = deque()
            it = iter(tasks)
            for task in it:
                pending.append((task, pool.submit(self._fetch, task)))
                if len(pending) >= self.window:
                    break
            while pending:
                task, future = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self._fetch, nxt)))
                try:
                    future.result()
                except PacsError as e:
                    on_skip(Skipped(task, "failed", str(e)))
                    continue
                yield task

    def _fetch(self, task: ImageTask) -> Path:
        parts = task.rel.split("/")  # studies/<st>/series/<se>/instances/<sop>
        ref = InstanceRef(parts[1], parts[3], parts[5])
        return self.spool.put(ref, retrieve(self.client, ref))

    def release(self, tasks: Iterable[ImageTask]) -> None:
        """Remove fetched files whose images are in the ledger or the report."""
        self.spool.remove(t.path for t in tasks)

    def _clear(self) -> None:
        self.spool.remove(p for p, _ in self.spool.pending())
        self.spool.clear_partial()

    def close(self) -> None:
        """Remove the spool folder (everything in it is in the ledger or the report, or refetched)."""
        import shutil

        shutil.rmtree(self.spool.root, ignore_errors=True)


def dicomweb_source(url: str, since: str | None = None, modalities: Sequence[str] = (), study: str | None = None,
                    scene_graphs: Path | None = None, shard: tuple[int, int] = (0, 1)) -> DicomWebSource:
    """The source for `regionmir ingest URL`; boxes from ``scene_graphs``, else the localizer.

    Raises:
        RegionMIRError: a malformed --since, --modality or --study.
        PacsError: a malformed or credential-bearing URL.
    """
    import hashlib
    from datetime import date

    from regionmir import config
    from regionmir.errors import RegionMIRError
    from regionmir.pacs.dicomweb import IMAGE_MODALITIES, check_url, valid_uid

    try:
        day = date.fromisoformat(since) if since else None
    except ValueError:
        raise RegionMIRError(f"--since takes a date YYYY-MM-DD, got {since!r}") from None
    wanted = tuple(dict.fromkeys(m.strip().upper() for m in modalities)) or IMAGE_MODALITIES
    if any(m not in IMAGE_MODALITIES for m in wanted):
        raise RegionMIRError(f"--modality takes {' or '.join(IMAGE_MODALITIES)} (chest radiographs), got {', '.join(modalities)}")
    if study is not None and not valid_uid(study):
        raise RegionMIRError(f"--study takes a StudyInstanceUID (digits and dots), got {study!r}")
    tag = hashlib.sha1(check_url(url).encode()).hexdigest()[:10]
    # a cache, not a promise to a sender: a crash loses nothing, so no fsync
    spool = Spool(config.home() / "spool" / f"dicomweb-{tag}-shard-{shard[0]}of{shard[1]}", durable=False)
    return DicomWebSource(url, Query(wanted, day, study), spool, annotations=scene_graphs)
