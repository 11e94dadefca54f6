"""The durable spool: received or fetched DICOM files waiting to be ingested, one file per instance.

Layout ``SPOOL/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A file is written
under a temporary name, fsync'd, renamed into place and its folder fsync'd before :meth:`Spool.put`
returns: once a C-STORE is answered with success, a power cut or kill -9 cannot lose the image.
Files leave the spool only after the ingest ledger holds them (or the report names them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from regionmir.errors import PacsError
from regionmir.pacs.dicomweb import InstanceRef, valid_uid


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A folder of instances waiting for ingest."""

    def __init__(self, root: str | Path, durable: bool = True):
        self.root = Path(root)
        self.durable = durable  # fsync files and folders (False for a re-fetchable cache)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # remove() must not drop a folder put() is writing into

    def path(self, ref: InstanceRef) -> Path:
        """Where ``ref`` lives in the spool.

        Raises:
            PacsError: a UID that is not digits and dots (it would escape the folder).
        """
        if not all(valid_uid(u) for u in (ref.study_uid, ref.series_uid, ref.sop_uid)):
            raise PacsError("An instance with malformed UIDs (not digits and dots) was refused; fix the sender.")
        return self.root / ref.study_uid / ref.series_uid / f"{ref.sop_uid}.dcm"

    def put(self, ref: InstanceRef, data: bytes) -> Path:
        """Store ``data`` (a whole DICOM file) durably; returns its path once it is on disk."""
        out = self.path(ref)
        with self._lock:
            return self._put(out, data)

    def _put(self, out: Path, data: bytes) -> Path:
        created = [p for p in (out.parent.parent, out.parent) if not p.is_dir()]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                if self.durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, out)
        except OSError:  # a full disk: the sender is told, and no partial file stays behind
            tmp.unlink(missing_ok=True)
            for folder in reversed(created):  # nor the folders made for it
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise
        if self.durable:
            _fsync_dir(out.parent)
            for folder in created:  # a new folder's entry lives in its parent
                _fsync_dir(folder.parent)
        return out

    def pending(self) -> list[tuple[Path, InstanceRef]]:
        """Every complete file in the spool with its UIDs (from its place), oldest UIDs first."""
        out = []
        for path in sorted(self.root.glob("*/*/*.dcm")):
            ref = InstanceRef(path.parent.parent.name, path.parent.name, path.stem)
            if all(valid_uid(u) for u in (ref.study_uid, ref.series_uid, ref.sop_uid)):
                out.append((path, ref))
        return out

    def remove(self, paths: Iterable[Path]) -> None:
        """Delete ingested files and the folders they leave empty."""
        with self._lock:
            for path in paths:
                self._remove(Path(path))

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            if folder == self.root:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone
                break

    def clear_partial(self) -> int:
        """Remove temporary files of writes cut short by a crash; returns how many."""
        stale = list(self.root.glob("*/*/.*.part"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
