"""RegionMIR: find chest X-rays with similar anatomy, region by region.

Importing this package loads no torch and no onnxruntime; heavy modules are imported
where they are used.
"""

import logging

from regionmir.anatomy import ALL, BOXED, Anatomy
from regionmir.errors import (
    AnnotationError,
    CollectionMismatchError,
    ImageReadError,
    MissingDependencyError,
    ModelError,
    RegionMIRError,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreUnavailableError,
    UnknownAnatomyError,
)

__version__ = "0.1.0"

# The stages' faces, imported on first use so that `import regionmir` stays light.
_LAZY = {
    "open_store": "regionmir.store",
    "Encoder": "regionmir.inference",
    "Localizer": "regionmir.inference",
    "IngestConfig": "regionmir.ingest",
    "run_ingest": "regionmir.ingest",
    "Searcher": "regionmir.search",
    "search_image": "regionmir.search",
}


def __getattr__(name: str):
    """Resolve a stage's public name (``regionmir.run_ingest``...) by importing its package."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'regionmir' has no attribute {name!r}")


logging.getLogger("regionmir").addHandler(logging.NullHandler())

__all__ = [
    "ALL",
    "BOXED",
    "Anatomy",
    "Encoder",
    "IngestConfig",
    "Localizer",
    "Searcher",
    "open_store",
    "run_ingest",
    "search_image",
    "AnnotationError",
    "CollectionMismatchError",
    "ImageReadError",
    "MissingDependencyError",
    "ModelError",
    "RegionMIRError",
    "StoreError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreUnavailableError",
    "UnknownAnatomyError",
    "__version__",
]
