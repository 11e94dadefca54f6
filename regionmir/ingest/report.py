"""Ingest run report: one JSONL line per image that yielded no points or a warning, then a summary.

Records hold the image id, its path as payloads show it (patient folder masked) and a reason;
never header values.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from regionmir import config


class Report:
    """The JSONL run report of one ingest, flushed line by line.

    A write that fails after the report was opened (a full disk, ``--report /dev/full``) does
    not stop the ingest, whose points are worth more than its report: writing stops, and
    :attr:`error` keeps the first failure for the caller to tell once the points are stored.
    """

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._handle = None
        self.error: OSError | None = None  # the first failed write; None while all went well
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", encoding="utf-8")

    def write(self, record: dict) -> None:
        """Append one record (flushed, so a killed run keeps what it found)."""
        if self._handle is not None:
            try:
                self._handle.write(json.dumps(record, sort_keys=True) + "\n")
                self._handle.flush()
            except OSError as e:
                self._give_up(e)

    def close(self) -> None:
        """Close the file; a failure to write its last bytes is kept in :attr:`error` too."""
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError as e:
                self.error = self.error or e
            self._handle = None

    def unwritten(self, summary) -> str:
        """What the user is told when the ingest of ``summary`` (an IngestSummary) stored its points
        but this report could not be written: one line, saying both, and how to get the list."""
        reason = getattr(self.error, "strerror", None) or str(self.error)
        return (
            f"The ingest stored {summary.ingested} image(s) ({summary.regions} regions) in collection "
            f"{summary.collection!r}, but the report {self.path} could not be written ({reason}): "
            f"{summary.failed} failed, {summary.unlabeled} unlabeled and {summary.duplicates} duplicate "
            "image(s) are not listed. Rerun with --report pointing to a writable file to list the "
            "failed and unlabeled ones (stored images are skipped)."
        )

    def _give_up(self, error: OSError) -> None:
        """Stop writing after ``error``: later lines would fail the same way or leave a gap."""
        self.error = self.error or error
        handle, self._handle = self._handle, None
        try:
            handle.close()
        except OSError:  # the unwritten rest of the buffer: lost with the report
            pass


def default_report_path(collection: str) -> Path:
    """``$REGIONMIR_HOME/reports/ingest-<collection>-<utc time to the microsecond>[-N].jsonl``.

    A name no earlier report has: two runs in the same second (a rerun, the passes of
    `regionmir listen`) must not overwrite each other's report.
    """
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    folder = config.home() / "reports"
    path, n = folder / f"ingest-{collection}-{stamp}.jsonl", 1
    while path.exists():
        path, n = folder / f"ingest-{collection}-{stamp}-{n}.jsonl", n + 1
    return path
