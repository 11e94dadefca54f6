"""Where RegionMIR keeps its things: the home folder, the default model and the default store."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_COLLECTION = "regions"


def home() -> Path:
    """``$REGIONMIR_HOME``, default ``~/.regionmir`` (not created here)."""
    return Path(os.environ.get("REGIONMIR_HOME") or Path.home() / ".regionmir").expanduser()


def default_model_dir() -> Path:
    """Folder of the default model (``encoder.onnx``, ``localizer.onnx``, reports)."""
    return home() / "model"


def default_store_dir() -> Path:
    """Folder of the embedded Qdrant store (one sub-folder per collection)."""
    return home() / "store"


def qdrant_url() -> str | None:
    """``$QDRANT_URL`` when set: use a Qdrant server instead of the embedded store."""
    return os.environ.get("QDRANT_URL") or None


def qdrant_api_key() -> str | None:
    """``$QDRANT_API_KEY`` when set."""
    return os.environ.get("QDRANT_API_KEY") or None
