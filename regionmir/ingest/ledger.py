"""Ingest ledger: per (collection, shard), the images whose points are all stored.

The ledger makes an ingest resumable. After every upsert batch the images whose points are
all stored are appended and fsync'd; a rerun skips them (:meth:`Ledger.has`). An entry is
:func:`entry_of` the image's path inside the archive, followed after a tab by :func:`entry_of`
the key its point ids were made from (its SOPInstanceUID) and after another by the path as
payloads show it (patient folder masked), so that a later file with the same key is recognised
as a duplicate of a named image instead of overwriting its points (:meth:`Ledger.claim`), then
the number of points it stored and :func:`entry_of` its ``image_id`` payload value. Those two
let :meth:`Ledger.reconcile` find images whose points the store lost (damaged segment files)
and have them ingested again, and let `regionmir doctor` see the loss (:func:`ledger_points`).
Hashes, because MIMIC-CXR paths name the patient. An image in doubt (its batch was being
written when the process died) is not in the ledger and is simply redone: point ids are
deterministic, so redoing overwrites instead of duplicating.

Each shard ``i/n`` of a collection has its own ledger file, written by one process at a time
(a lock file enforces it), so workers of different shards may share one $REGIONMIR_HOME. A
ledger also counts as done the images in the other shards' ledgers of the same collection
(read-only), so a rerun with another ``--shard`` split skips what any split finished.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from regionmir import config
from regionmir.errors import StoreError, StoreLockedError

if TYPE_CHECKING:
    from regionmir.ingest.stages import ImageTask

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; do not run two ingests of one shard there
    fcntl = None

INDEXED = "#indexed"  # ledger line: the index was built after every id above it was upserted

log = logging.getLogger("regionmir")


@dataclass(frozen=True)
class Stored:
    """What a ledger line says an image stored: its points and the ``image_id`` they carry."""

    points: int  # points (regions) its upsert wrote
    image: str  # entry_of its ``image_id`` payload value (the store's indexed field)


def entry_of(text: str) -> str:
    """The ledger's name for a path or key: 20 hex of its SHA-256 (no patient folder, no UID)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _ledger_base(location: str, collection: str) -> Path:
    tag = hashlib.sha1(location.encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in collection)
    return config.home() / "ledgers" / f"{safe}-{tag}"


def ledger_path(location: str, collection: str, shard: tuple[int, int] = (0, 1)) -> Path:
    """Where the ledger of shard ``i/n`` of ``collection`` in the store at ``location`` lives.

    Under ``$REGIONMIR_HOME/ledgers``; the whole archive (``0/1``) keeps the plain name.
    """
    base = _ledger_base(location, collection)
    i, n = shard
    return base.with_name(base.name + (".done" if n == 1 else f".shard-{i}of{n}.done"))


def ledger_family(location: str, collection: str) -> list[Path]:
    """The existing ledgers of every shard split of ``collection`` in the store at ``location``."""
    base = _ledger_base(location, collection)
    if not base.parent.is_dir():
        return []
    pattern = re.compile(re.escape(base.name) + r"(\.shard-\d+of\d+)?\.done")
    return sorted(p for p in base.parent.iterdir() if pattern.fullmatch(p.name))


def _read_lines(path: Path, token: str) -> list[str] | None:
    """The complete lines after the token header of ``path``; None when missing or of another token."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    lines = data[: data.rfind(b"\n") + 1].decode("utf-8", "replace").split("\n")
    if lines[0] != token:
        return None
    return [x for x in lines[1:] if x]


def _fields(line: str) -> tuple[str, str, str, Stored | None]:
    """``(image, key, shown path, stored)`` of a ledger line; missing fields are empty or None."""
    image, key, shown, points, value = (line.split("\t", 4) + ["", "", "", ""])[:5]
    stored = Stored(int(points), value) if points.isdigit() and value else None
    return image, key, shown, stored


def lost_images(stored: dict[str, Stored], found: dict[str, int]) -> set[str]:
    """The images (ledger entries) whose ``image_id`` group holds fewer points than they stored.

    Args:
        stored: ledger entry -> what it stored.
        found: points per ``image_id`` value in the store (a facet).
    """
    have: dict[str, int] = {}
    for value, n in found.items():
        have[entry_of(value)] = have.get(entry_of(value), 0) + n
    want: dict[str, int] = {}
    for s in stored.values():
        want[s.image] = want.get(s.image, 0) + s.points
    short = {image for image, n in want.items() if have.get(image, 0) < n}
    return {e for e, s in stored.items() if s.image in short}


def ledger_points(paths: Iterable[Path], token: str) -> tuple[int, int]:
    """``(images, points)`` the ledgers at ``paths`` of one collection generation say are stored.

    Read only, without the lock: for `regionmir doctor`, which compares the points with the store's.
    Images recorded without a point count (older ledgers) count as images only.
    """
    stored: dict[str, int] = {}
    for path in paths:
        try:
            lines = _read_lines(Path(path), token) or []
        except OSError:  # a ledger replaced by a folder: the ingest names it
            continue
        for line in lines:
            if line != INDEXED:
                image, _, _, s = _fields(line)
                stored[image] = s.points if s else stored.get(image, 0)
    return len(stored), sum(stored.values())


class Ledger:
    """Append-only set of finished images for one collection generation.

    The first line holds the collection's ``ingest_token`` (written into the collection meta
    when it was created). A ledger with another token belongs to a deleted and re-created
    collection and is started afresh. A torn last line (kill -9 mid-write) is ignored.
    ``indexed`` is True when the last line is :data:`INDEXED`: nothing was upserted since the
    index was built, so a rerun that finds nothing to do need not build it again.
    """

    def __init__(self, path: Path, token: str, others: Iterable[Path] = ()):
        """Open (or start) the ledger at ``path``; ``others``: ledgers of other shards, read only.

        Raises:
            StoreLockedError: another process is writing this ledger (the same shard of the
                same collection, with the same $REGIONMIR_HOME).
        """
        self.path = Path(path)
        self.token = token
        self.indexed = False
        # entry of a point-id key (SOPInstanceUID) -> (entry of the image holding it, its shown path)
        self.keys: dict[str, tuple[str, str]] = {}
        self._claims: dict[str, tuple[str, Stored | None]] = {}  # image -> (its key, its points), until marked
        self.stored: dict[str, Stored] = {}  # entry of an image -> its points, where its line says
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = self._acquire_lock()
            if self._header() != token:
                self._write_header()
            self.done: set[str] = self._load()
            self._merge(p for p in others if Path(p) != self.path)
            self._handle = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise StoreError(config.unwritable_message(self.path.parent, e)) from None

    def _acquire_lock(self):
        """Lock ``<ledger>.lock`` against other processes (a POSIX lock: held per process)."""
        handle = self.path.with_suffix(".lock").open("a", encoding="utf-8")
        if fcntl is None:
            return handle
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StoreLockedError(
                f"Another ingest is writing the ledger {self.path.name} (the same --shard of the "
                f"same collection, with this REGIONMIR_HOME {self.path.parent.parent}). Wait for it "
                "to finish. Concurrent ingest workers need a Qdrant server (--qdrant-url) and a "
                "distinct --shard i/n each; on the embedded store one ingest runs at a time "
                "(give it more --workers instead)."
            ) from None
        return handle

    def _merge(self, others: Iterable[Path]) -> None:
        """Count the images finished by other shards' ledgers (same token) as done too."""
        flags = [self.indexed] if self.done else []
        for other in others:
            lines = _read_lines(Path(other), self.token)
            if lines:
                self.done.update(self._parse(x for x in lines if x != INDEXED))
                flags.append(lines[-1] == INDEXED)
        self.indexed = bool(flags) and all(flags)

    def _header(self) -> str | None:
        try:
            with self.path.open("rb") as handle:
                return handle.readline().decode("utf-8", "replace").rstrip("\n") or None
        except FileNotFoundError:
            return None

    def _load(self) -> set[str]:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line: cut it so the next append starts clean
            with self.path.open("r+b") as handle:
                handle.truncate(end)
        # a damaged byte spoils its line only: an entry that matches nothing, so that image is redone
        lines = [x for x in data[:end].decode("utf-8", "replace").split("\n")[1:] if x]  # [0] is the token
        self.indexed = bool(lines) and lines[-1] == INDEXED
        return self._parse(x for x in lines if x != INDEXED)

    def _parse(self, lines: Iterable[str]) -> set[str]:
        """Ids of ``lines`` (``id``, ``id<TAB>key<TAB>path`` or with ``<TAB>points<TAB>image``);
        keys go to :attr:`keys` (first kept), point counts to :attr:`stored`."""
        ids = set()
        for line in lines:
            image_id, key, shown, stored = _fields(line)
            ids.add(image_id)
            if key:
                self.keys.setdefault(key, (image_id, shown))
            if stored:
                self.stored[image_id] = stored
        return ids

    def _write_header(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(self.token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def has(self, task: ImageTask) -> bool:
        """Whether the image of ``task`` (its path inside the archive) is finished."""
        return entry_of(task.rel) in self.done

    def claim(self, task: ImageTask, key: str, shown: str, points: int | None = None,
              image_id: str | None = None) -> str | None:
        """Let the image of ``task`` hold point-id key ``key`` (its SOPInstanceUID); None when it may.

        When another image holds ``key`` already (stored by an earlier run, or claimed earlier in
        this one), that image's shown path is returned instead: ``task`` is a duplicate and its
        points must not be stored. A claim becomes durable when :meth:`mark` records ``task``,
        with ``points`` (how many it stores) and ``image_id`` (their payload value; default
        ``task.image_id``) for :meth:`reconcile`.
        """
        key, me = entry_of(key), entry_of(task.rel)
        holder = self.keys.get(key)
        if holder is not None and holder[0] != me:
            return holder[1]
        self.keys[key] = (me, " ".join(shown.split()))  # no tab or newline can break the line
        self._claims[me] = (key, None if points is None else Stored(points, entry_of(image_id or task.image_id)))
        return None

    def mark(self, tasks: Iterable[ImageTask]) -> None:
        """Record the images of ``tasks`` as finished, durably (flush + fsync) before returning.

        An image that claimed a key is written with it and its shown path (see :meth:`claim`).
        """
        entries = [e for e in dict.fromkeys(entry_of(t.rel) for t in tasks) if e not in self.done]
        if not entries:
            return
        lines = []
        for e in entries:
            key, stored = self._claims.pop(e, (None, None))
            line = f"{e}\t{key}\t{self.keys[key][1]}" if key else e
            if key and stored:
                line += f"\t{stored.points}\t{stored.image}"
                self.stored[e] = stored
            lines.append(line + "\n")
        self._append("".join(lines))
        self.done.update(entries)
        self.indexed = False

    def reconcile(self, store, collection: str) -> dict | None:
        """Forget the finished images whose points the store lost, so that the ingest redoes them.

        Cheap when nothing is lost: one exact count against the points the ledger lists. Only
        when the store holds fewer does it count points per ``image_id`` (one facet over the
        payload index) and compare each image's group; a group that shares an ``image_id`` and
        lost points is redone whole (point ids are deterministic: redoing overwrites). Images
        recorded without a point count (older ledgers) cannot be checked and are kept.

        Returns:
            A report record (``event: "repair"``) when images are redone, else None.
        """
        expected = sum(s.points for e, s in self.stored.items() if e in self.done)
        have = store.count(collection) if expected else 0
        if have >= expected:
            return None
        lost = lost_images({e: s for e, s in self.stored.items() if e in self.done},
                           store.facet(collection, "image_id", limit=max(have, 1)))
        self.done.difference_update(lost)
        self.indexed = False
        reason = (f"the store holds {have} of the {expected} points this ledger lists (damaged "
                  f"store files?); {len(lost)} images are ingested again")
        log.warning("collection %r: %s", collection, reason)
        return {"event": "repair", "images": len(lost), "points_expected": expected,
                "points_found": have, "reason": reason}

    def mark_indexed(self) -> None:
        """Record that the index was built after the last upsert (a rerun need not rebuild it)."""
        self._append(INDEXED + "\n")
        self.indexed = True

    def _append(self, text: str) -> None:
        self._handle.write(text)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
        self._lock.close()  # releases the lock
