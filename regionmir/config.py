"""Where RegionMIR keeps its things: the home folder, the default model and the default store."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_COLLECTION = "regions"


def home() -> Path:
    """``$REGIONMIR_HOME``, default ``~/.regionmir`` (not created here).

    Raises:
        RegionMIRError: a ``~user`` in it names no user, or no home folder can be found.
    """
    try:
        return Path(os.environ.get("REGIONMIR_HOME") or Path.home() / ".regionmir").expanduser()
    except RuntimeError as e:  # "Could not determine home directory."
        from regionmir.errors import RegionMIRError

        raise RegionMIRError(f"REGIONMIR_HOME={os.environ.get('REGIONMIR_HOME', '')!r} cannot be resolved "
                             f"({e}): give a folder path, such as /data/regionmir.") from None


def require_home() -> Path:
    """:func:`home`, refused when it is a file (or under one), for the commands that use it.

    Without this check ``REGIONMIR_HOME=/etc/hostname`` reads as an empty home ("no store",
    "no model"), which sends a person looking for the wrong fault. :func:`home` itself stays
    lenient so that `regionmir doctor` can report the problem among its checks.

    Raises:
        RegionMIRError: the home, or its nearest existing parent, is not a folder.
    """
    path = home()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # a home that does not exist yet is made on first use
    if existing.exists() and not existing.is_dir():
        from regionmir.errors import RegionMIRError

        what = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise RegionMIRError(f"REGIONMIR_HOME is not a folder: {path} {what}. Set REGIONMIR_HOME to a "
                             "folder (it is created when missing), such as ~/.regionmir.")
    return path


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


def unwritable_message(folder: Path, error: OSError) -> str:
    """One line for a person when ``folder`` (under $REGIONMIR_HOME) cannot be written."""
    import errno

    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC or error.errno == getattr(errno, "EDQUOT", None):
        return (f"No space left to write {folder} ({reason}): free disk space or set "
                "REGIONMIR_HOME to a folder on a disk with room. Nothing stored was lost.")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"Cannot write {folder} ({reason}): REGIONMIR_HOME ({home()}) must be writable. "
                "Fix its permissions, or set REGIONMIR_HOME to a folder you can write.")
    return f"Cannot write {folder} ({reason}): check the disk and REGIONMIR_HOME ({home()})."
