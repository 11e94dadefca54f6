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

logging.getLogger("regionmir").addHandler(logging.NullHandler())

__all__ = [
    "ALL",
    "BOXED",
    "Anatomy",
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
