"""Ingest sources: which images to ingest (plan), getting each onto disk (feed), letting it go (release).

The runner reads every image through one :class:`Source`: :class:`ArchiveSource` walks an archive
folder; :mod:`regionmir.pacs.source` has a DICOMweb service and the spool of `regionmir listen`.
Sharding is part of planning: shard ``i/n`` takes the images whose stable hash mod ``n`` is ``i``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from regionmir.archive import Archive, image_id_of
from regionmir.ingest.stages import ImageTask, Skipped

if TYPE_CHECKING:
    from regionmir.ingest.ledger import Ledger


class Source(Protocol):
    """Where an ingest's images come from.

    ``annotations`` is the folder scene graphs and the gold CSV are read from (for a PACS, the
    ``--scene-graphs`` folder, else the spool, which holds none: the localizer places the boxes). ``archive_root`` is the folder payload paths are relative
    to, recorded in the collection so that montages find the images again; None for a PACS,
    whose payload paths are WADO-RS paths.
    """

    annotations: Path
    archive_root: Path | None

    def plan(self, shard: tuple[int, int], ledger: Ledger) -> tuple[list[ImageTask], int]:
        """The images of ``shard`` still to ingest, and how many of its images ``ledger`` has.

        Raises:
            RegionMIRError: the source cannot be listed (a PacsError for a PACS).
        """
        ...

    def feed(self, tasks: Sequence[ImageTask], on_skip: Callable[[Skipped], None]) -> Iterator[ImageTask]:
        """Each of ``tasks`` once its file is on disk, in order; one that cannot be had goes to ``on_skip``."""
        ...

    def release(self, tasks: Iterable[ImageTask]) -> None:
        """``tasks`` are in the ledger or the report: the source may forget their files."""
        ...

    def close(self) -> None:
        """Free what the source holds (temporary files, connections)."""
        ...


def shard_of(image_id: str, n: int) -> int:
    """Stable shard of an image: the same on every machine, independent of paths and order."""
    return int.from_bytes(hashlib.sha1(image_id.encode()).digest()[:8], "big") % n


def parse_shard(text: str, name: str = "--shard") -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``name`` is how the user gave it.

    Raises:
        ValueError: anything else, with a message saying what was expected.
    """
    parts = text.strip().split("/")
    try:
        i, n = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        i = n = None
    if i is None or n is None or n < 1 or not 0 <= i < n:
        raise ValueError(f"{name} must be i/n with 0 <= i < n, such as 0/3; got {text!r}")
    return i, n


def plan(archive: Archive, shard: tuple[int, int] = (0, 1), ledger: Ledger | None = None) -> tuple[list[ImageTask], int]:
    """The images of ``archive`` in ``shard`` that ``ledger`` does not have, and how many it has."""
    i, n = shard
    todo, skipped = [], 0
    for path in archive.dicom_paths():
        image_id = image_id_of(path)
        if shard_of(image_id, n) != i:
            continue
        task = ImageTask(path, archive.relative(path), image_id)
        if ledger is not None and ledger.has(task):
            skipped += 1
            continue
        todo.append(task)
    return todo, skipped


class ArchiveSource:
    """The DICOM files of an archive folder: on disk already, nothing to release or close."""

    def __init__(self, archive: Archive):
        self.archive = archive
        self.annotations = archive.root
        self.archive_root = archive.root

    def plan(self, shard: tuple[int, int], ledger: Ledger) -> tuple[list[ImageTask], int]:
        """The archive's images of ``shard`` not in ``ledger``; see :func:`plan`."""
        return plan(self.archive, shard, ledger)

    def feed(self, tasks: Sequence[ImageTask], on_skip: Callable[[Skipped], None]) -> Iterator[ImageTask]:
        """The tasks as they are."""
        return iter(tasks)

    def release(self, tasks: Iterable[ImageTask]) -> None:
        """Nothing to let go: the archive is the user's."""

    def close(self) -> None:
        """Nothing to free."""
