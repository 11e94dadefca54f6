"""Fixtures of the ingest tests."""

from __future__ import annotations

import pytest
from helpers.ingest import SALT


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh $REGIONMIR_HOME with a fixed salt, no Qdrant server."""
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REGIONMIR_SALT", SALT)
    monkeypatch.delenv("QDRANT_URL", raising=False)
    return tmp_path / "home"
