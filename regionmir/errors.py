"""Exceptions with messages a person can act on: what was found, and what to do about it.

The library raises these; the CLI prints ``str(error)`` as one red line and exits 1.
Messages never contain patient names, birth dates or raw patient ids.
"""

from __future__ import annotations

from pathlib import Path


class RegionMIRError(Exception):
    """Base class for every error RegionMIR raises on purpose."""


class UsageError(RegionMIRError, ValueError):
    """A value given for an option that is wrong on its face (a box outside the image, a bad
    ``--where``): the CLI shows it as a usage error naming ``option`` (exit 2), `regionmir serve`
    as a 400 naming it."""

    def __init__(self, reason: str, option: str, message: str | None = None):
        self.reason = reason  # without the option name: the CLI and the server name it
        self.option = option
        super().__init__(message or f"{option}: {reason}")


class UnknownAnatomyError(RegionMIRError, ValueError):
    """A region name that is not in the Chest ImaGenome vocabulary."""

    def __init__(self, text: str, close: list[str]):
        self.text = text
        self.close = close
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(
            f"Unknown anatomy {text!r}.{hint} Run `regionmir anatomies` to list all 36 regions."
        )


class ImageReadError(RegionMIRError):
    """A file that cannot be turned into a radiograph (not DICOM, no pixels, truncated, ...)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot read image {self.path}: {reason}")


class AnnotationError(RegionMIRError):
    """A scene graph, gold CSV or split file that is malformed."""


class ModelError(RegionMIRError):
    """A model file that is missing, unreadable, or does not fit the data it is used with."""


class StoreError(RegionMIRError):
    """Any failure of the vector store (embedded or server)."""


class StoreNotFoundError(StoreError):
    """No store, or no such collection, where one was expected."""


class StoreLockedError(StoreError):
    """The embedded store is open in another process (for example a running ingest)."""


class StoreUnavailableError(StoreError):
    """A Qdrant server that cannot be reached or refuses the request."""


class CollectionMismatchError(StoreError):
    """A collection that was filled by another model, or has another vector size."""


class MissingDependencyError(RegionMIRError, ImportError):
    """An optional dependency that is needed for this command and not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs {package}, which is not installed. "
            f"Install it with: pip install 'regionmir[{extra}]'"
        )


class PacsError(RegionMIRError):
    """A PACS (DICOMweb service or DICOM peer) that cannot be reached, refuses us, or answers nonsense."""
