"""Display: stored DICOM pixel values -> (H, W) float32 in [0, 1], bright = dense.

The PS3.3 C.11 pipeline: modality LUT (Rescale Slope/Intercept in float32 in place, or a
Modality LUT Sequence), then the VOI (the file's first window with LINEAR, LINEAR_EXACT or
SIGMOID, or its VOI LUT Sequence), else a 0.5..99.5 percentile window (see
:mod:`regionmir.dicom` for why), then MONOCHROME1 inversion. One full-size float32 copy.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi

PERCENTILES = (0.5, 99.5)  # the window used when a DICOM carries none
_SAMPLE_SIDE = 512  # percentiles are taken on about this many rows x columns


def to_display(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored pixel values -> ``(H, W)`` float32 in [0, 1], bright = dense (see module doc)."""
    if ds.get("ModalityLUTSequence"):
        values = apply_modality_lut(stored, ds).astype(np.float32)
    else:
        values = stored.astype(np.float32)  # the one full-size copy
        slope, intercept = _rescale(ds)
        if slope != 1:
            values *= np.float32(slope)
        if intercept != 0:
            values += np.float32(intercept)
    if not _apply_voi(values, ds):
        _apply_percentile_window(values, ds)
    np.clip(values, 0.0, 1.0, out=values)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        np.subtract(np.float32(1.0), values, out=values)
    return values


def _apply_voi(values: np.ndarray, ds: Dataset) -> bool:
    """Map ``values`` (modality output, float32) to [0, 1] in place with the file's VOI.

    The VOI LUT Sequence wins over a window, as in pydicom's ``apply_voi_lut``. Returns False
    when the file has no usable VOI.
    """
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") and seq[0].get("LUTData") is not None:
        depth = int(seq[0].LUTDescriptor[2])
        out = apply_voi(np.rint(values).astype(np.int32), ds)  # LUT entries 0 .. 2**depth - 1
        values[...] = out
        values *= np.float32(1.0 / max(2**depth - 1, float(out.max()), 1.0))
        return True
    window = _window(ds)
    if window is None:
        return False
    center, width, function = window
    if function == "SIGMOID":  # PS3.3 C.11.2.1.3.1
        values -= np.float32(center)
        values *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):  # exp -> inf -> 1 / inf = 0, as it should
            np.exp(values, out=values)
        values += np.float32(1.0)
        np.reciprocal(values, out=values)
    elif function == "LINEAR_EXACT":  # C.11.2.1.3.2
        values -= np.float32(center)
        values *= np.float32(1.0 / width)
        values += np.float32(0.5)
    elif width > 1:  # LINEAR, C.11.2.1.2.1
        values -= np.float32(center - 0.5)
        values *= np.float32(1.0 / (width - 1))
        values += np.float32(0.5)
    else:  # LINEAR with width 1: a threshold
        np.greater(values, np.float32(center - 0.5), out=values, casting="unsafe")
    return True


def _window(ds: Dataset) -> tuple[float, float, str] | None:
    """The first (center, width, function) of the file, or None when absent or invalid."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    min_width = 1.0 if function == "LINEAR" else 0.0
    if not (math.isfinite(center) and math.isfinite(width)) or width < min_width or width <= 0:
        return None
    return center, width, function


def _apply_percentile_window(values: np.ndarray, ds: Dataset) -> None:
    """Map the 0.5..99.5 percentile range of ``values`` to [0, 1] in place (BitsStored fallback)."""
    step = max(1, min(values.shape) // _SAMPLE_SIDE)
    lo, hi = (float(v) for v in np.percentile(values[::step, ::step], PERCENTILES))
    if not hi > lo:
        lo, hi = _stored_range(ds)
    if not hi > lo:
        values[...] = 0.0
        return
    values -= np.float32(lo)
    values *= np.float32(1.0 / (hi - lo))


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """The modality-value range that BitsStored allows."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if ds.get("PixelRepresentation"):
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    slope, intercept = _rescale(ds)
    low, high = sorted((lo * slope + intercept, hi * slope + intercept))
    return low, high


def _rescale(ds: Dataset) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept), defaults (1, 0).

    Raises:
        ValueError: either is NaN or infinite (every pixel would be).
    """
    slope, intercept = float(ds.get("RescaleSlope") or 1), float(ds.get("RescaleIntercept") or 0)
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise ValueError(f"RescaleSlope {slope} / RescaleIntercept {intercept} is not a finite number")
    return slope, intercept
