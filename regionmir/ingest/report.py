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
    """The JSONL run report of one ingest, flushed line by line."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._handle = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", encoding="utf-8")

    def write(self, record: dict) -> None:
        """Append one record (flushed, so a killed run keeps what it found)."""
        if self._handle is not None:
            self._handle.write(json.dumps(record, sort_keys=True) + "\n")
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


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
