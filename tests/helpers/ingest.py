"""Ingest helpers shared by test modules: an ingested home, and a kill that lands mid-run."""

from __future__ import annotations

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


def kill_when_ledger_has(proc, home, lines: int = 2, timeout: float = 240) -> int:
    """SIGKILL ``proc`` (an ingest) once a ledger under ``home`` lists ``lines`` images; wait for it.

    Returns how many images the ledger listed at the kill (fewer when the run ended first).
    """
    import os
    import signal
    import time
    from pathlib import Path

    ledgers, n_done, deadline = Path(home) / "ledgers", 0, time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        files = list(ledgers.glob("*.done")) if ledgers.is_dir() else []
        n_done = len(files[0].read_text().splitlines()) - 1 if files else 0
        if n_done >= lines:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    return n_done
