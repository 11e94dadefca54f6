"""Decode: a DICOM (or PNG/JPEG) file -> Radiograph, a normalized float image and a safe header.

Every image leaves this module as ``(H, W)`` float32 in [0, 1], bright = dense (bone white).
For DICOM the display pipeline of PS3.3 C.11 is followed:

1. stored values, decoded by pydicom (native, RLE, JPEG, JPEG-LS, JPEG 2000 via pylibjpeg);
2. the modality LUT: Rescale Slope/Intercept (in float32, in place), or a Modality LUT Sequence;
3. the VOI: the file's first window (Window Center/Width, VOI LUT Function LINEAR,
   LINEAR_EXACT or SIGMOID), or its VOI LUT Sequence, mapped to [0, 1];
4. MONOCHROME1 is inverted, so the result always has the MONOCHROME2 look.

When the file has no VOI, the window is the 0.5th..99.5th percentile of the modality values
(sampled on a fixed grid). Scaling by the nominal BitsStored range instead would make the
same anatomy look different per detector: many CR/DX images use a few thousand of their
4096..32768 codes, so the lungs would be a flat grey. Percentiles are a function of the
decoded values only, so a losslessly compressed copy gives a bit-identical result, and they
ignore a few outlier pixels (markers, burned-in text). BitsStored is the fallback when the
percentiles collapse (a flat image).

PNG and JPEG files (e.g. MIMIC-CXR-JPG) are already display images: they are only scaled by
their bit depth (8-bit /255, 16-bit /65535); RGB is converted to grey.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from regionmir.display import to_display
from regionmir.errors import ImageReadError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_NOT_GRAYSCALE = "not a single-frame grayscale radiograph"
_PRIVATE_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs")


@dataclass(frozen=True)
class DicomHeader:
    """The non-identifying header fields RegionMIR uses (all None for PNG/JPEG but the size)."""

    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    patient_id: str | None = field(repr=False)  # raw; only ever passed to privacy.pseudonym
    view: str | None  # ViewPosition: "PA", "AP", "LL", ...
    modality: str | None  # "CR", "DX"
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None  # mm (row, column); None when absent or zero
    # raw PatientName and PatientBirthDate: only ever passed to privacy.mask_path
    identifying: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def patient_values(self) -> tuple[str, ...]:
        """PatientID, PatientName, PatientBirthDate as the file has them (those present): for
        :func:`regionmir.privacy.mask_path`, never to be shown."""
        return tuple(v for v in (self.patient_id, *self.identifying) if v)


@dataclass(frozen=True)
class Radiograph:
    """A decoded image: ``pixels`` is ``(rows, columns)`` float32 in [0, 1], bright = dense."""

    path: str
    header: DicomHeader
    pixels: np.ndarray


# ----------------------------------------------------------------------------- public API


def read_header(path: str | Path) -> DicomHeader:
    """The header of a DICOM (or the size of a PNG/JPEG) without decoding any pixels.

    Raises:
        ImageReadError: not readable, not an image SOP class, or not a single-frame grayscale
            image.
    """
    kind = _sniff(path)
    if kind != "dicom":
        with _open_picture(path) as im:
            return _picture_header(im)
    ds = _dcmread(path, stop_before_pixels=True)
    with _damaged_elements(path):
        _check_image_header(path, ds)
        return _header(ds)


def read_image(path: str | Path) -> Radiograph:
    """Decode a DICOM, PNG or JPEG radiograph to ``(H, W)`` float32 in [0, 1], bright = dense.

    Raises:
        ImageReadError: not a DICOM/PNG/JPEG, a non-image DICOM (SR, RT plan, ...), colour or
            multi-frame, no or truncated pixel data, or a transfer syntax without a decoder.
    """
    if _sniff(path) != "dicom":
        with _open_picture(path) as im:
            return Radiograph(str(path), _picture_header(im), _picture_pixels(path, im))
    ds = _dcmread(path)
    with _damaged_elements(path):
        return _radiograph(path, ds)


def _radiograph(path: str | Path, ds: Dataset) -> Radiograph:
    """The checked, decoded and windowed image of a parsed DICOM."""
    _check_image_header(path, ds)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError(path, "the DICOM has no pixel data (the file may be truncated)")
    stored = _decode(path, ds)  # (H, W) stored values
    try:
        pixels = to_display(stored, ds)
    except Exception as e:  # a malformed LUT or window in the header
        raise ImageReadError(path, f"the modality/VOI LUT cannot be applied "
                             f"({type(e).__name__}: {_scrub(str(e), ds)})") from None
    if np.isnan(pixels.sum(dtype=np.float64)):  # values are clipped to [0, 1]: only NaN survives
        raise ImageReadError(path, "its pixel values decode to NaN (a NaN RescaleSlope/RescaleIntercept, "
                             "or NaN float pixel data): the image cannot be read")
    return Radiograph(str(path), _header(ds), pixels)


# ----------------------------------------------------------------------------- DICOM reading


def _sniff(path: str | Path) -> str:
    """``"dicom"``, ``"png"`` or ``"jpeg"`` from the first bytes of the file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except FileNotFoundError:
        raise ImageReadError(path, "the file does not exist") from None
    except IsADirectoryError:
        raise ImageReadError(path, "this is a folder, not an image file") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot open the file ({e.strerror})") from None
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    if not head:
        raise ImageReadError(path, "the file is empty")
    raise ImageReadError(
        path, "not a DICOM file (no 'DICM' marker at byte 128) and not a PNG or JPEG image"
    )


def patient_values(path: str | Path) -> tuple[str, ...]:
    """PatientID, PatientName and PatientBirthDate of any DICOM that can be parsed (an SR, a
    truncated image): to mask the path of a file that cannot be read as an image. ``()`` when none."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_PRIVATE_KEYWORDS[:3]))
    except Exception:  # noqa: BLE001 - whatever the file is, it has no values to hide then
        return ()
    return tuple(v for v in (str(ds.get(k) or "").strip() for k in _PRIVATE_KEYWORDS[:3]) if v)


def _dcmread(path: str | Path, stop_before_pixels: bool = False) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as e:  # pydicom raises many types for a damaged file
        raise ImageReadError(path, f"the DICOM cannot be parsed ({type(e).__name__}); "
                             "the file may be truncated or corrupt") from None


@contextmanager
def _damaged_elements(path: str | Path):
    """Turn pydicom's late value errors into ImageReadError.

    pydicom converts an element's bytes on first access, so an element of impossible length
    (a US value of 1 byte) fails wherever the header is read, not when the file is parsed.
    """
    try:
        yield
    except BytesLengthException as e:
        tag = re.search(r"\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)", str(e))
        where = f"element {tag.group(0)}" if tag else "an element"
        raise ImageReadError(path, f"its header is damaged: {where} has a value of the wrong length "
                             "for its type") from None


def _check_image_header(path: str | Path, ds: Dataset) -> None:
    """Refuse non-image SOP classes, colour and multi-frame images, from the header alone."""
    if len(ds) == 0:  # pydicom returns an empty data set when it hits the end of the file
        raise ImageReadError(path, "the DICOM has no data elements after its file meta "
                             "header: the file is truncated or corrupt")
    meta = getattr(ds, "file_meta", None) or {}
    sop = ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")
    sop_name = UID(str(sop)).name if sop else ""
    if sop and sop_name != str(sop) and "Image" not in sop_name:
        raise ImageReadError(path, f"the DICOM is a {sop_name} ({ds.get('Modality', '?')}), "
                             f"not an image: {_NOT_GRAYSCALE}")
    if ds.get("Rows") is None or ds.get("Columns") is None:
        what = f"a {sop_name}" if sop_name else "a DICOM"
        raise ImageReadError(path, f"{what} without Rows/Columns: no image in it "
                             "(or the header is truncated)")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    samples = _count(path, ds, "SamplesPerPixel")
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(path, f"the image is {photometric} with {samples} sample(s) per "
                             f"pixel: {_NOT_GRAYSCALE}")
    frames = _count(path, ds, "NumberOfFrames")
    if frames != 1:
        raise ImageReadError(path, f"the image has {frames} frames: {_NOT_GRAYSCALE}")


def _count(path: str | Path, ds: Dataset, keyword: str) -> int:
    """A count element of the header (1 when absent).

    Raises:
        ImageReadError: its value is not a whole number.
    """
    try:
        return int(ds.get(keyword) or 1)
    except (TypeError, ValueError):
        raise ImageReadError(path, f"its {keyword} is not a whole number: the header is damaged") from None


# pip packages that give pydicom a decoder, by transfer syntax family
_CODECS = {
    "JPEG 2000": "pylibjpeg pylibjpeg-openjpeg",
    "JPEG-LS": "pylibjpeg pylibjpeg-libjpeg",
    "JPEG": "pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pylibjpeg pylibjpeg-rle",
}


def _check_decoder(path: str | Path, ds: Dataset) -> None:
    """Raise when pydicom cannot decode this transfer syntax here, naming what to install."""
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None:
        raise ImageReadError(path, "the file meta information has no TransferSyntaxUID")
    tsyntax = UID(str(tsyntax))
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise ImageReadError(
            path, f"transfer syntax {tsyntax.name} ({tsyntax}) cannot be decoded by pydicom; "
            "convert the file to an uncompressed transfer syntax (e.g. `gdcmconv --raw`)"
        ) from None
    if not decoder.is_available:
        package = next((p for k, p in _CODECS.items() if k in tsyntax.name), "pylibjpeg")
        raise ImageReadError(
            path, f"transfer syntax {tsyntax.name} needs a codec that is not installed: "
            f"pip install {package}"
        )


def _decode(path: str | Path, ds: Dataset) -> np.ndarray:
    """The stored values ``(Rows, Columns)``; decoding errors become ImageReadError."""
    _check_decoder(path, ds)
    try:
        stored = ds.pixel_array
    except Exception as e:  # decoder plugins raise ValueError, RuntimeError, ...
        raise ImageReadError(path, f"the pixel data cannot be decoded ({_scrub(str(e), ds)}); "
                             "the file may be truncated or corrupt") from None
    if stored.shape != (int(ds.Rows), int(ds.Columns)):
        raise ImageReadError(path, f"decoded pixels have shape {stored.shape}, the header says "
                             f"{int(ds.Rows)}x{int(ds.Columns)}: {_NOT_GRAYSCALE}")
    return stored


def _scrub(text: str, ds: Dataset) -> str:
    """``text`` with any patient identifier of ``ds`` blanked out (for third-party messages)."""
    for keyword in _PRIVATE_KEYWORDS:
        value = str(ds.get(keyword) or "").strip()
        if len(value) >= 3:
            text = text.replace(value, "<redacted>")
    return " ".join(text.split())[:300]


def _header(ds: Dataset) -> DicomHeader:
    def text(keyword: str) -> str | None:
        value = str(ds.get(keyword) or "").strip()
        return value or None

    view = text("ViewPosition")
    return DicomHeader(
        sop_instance_uid=text("SOPInstanceUID"), study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"), patient_id=text("PatientID"),
        view=view.upper() if view else None, modality=text("Modality"),
        rows=int(ds.Rows), columns=int(ds.Columns), pixel_spacing=_spacing(ds),
        identifying=tuple(v for v in (text("PatientName"), text("PatientBirthDate")) if v),
    )


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing, in mm; None when absent, malformed or zero."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            values = [float(v) for v in (ds.get(keyword) or [])]
        except (TypeError, ValueError):
            continue
        if len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values):
            return values[0], values[1]
    return None


# ----------------------------------------------------------------------------- PNG / JPEG


def _open_picture(path: str | Path):
    from PIL import Image

    try:
        return Image.open(path)
    except Exception as e:  # PIL.UnidentifiedImageError, OSError
        raise ImageReadError(path, f"the PNG/JPEG cannot be opened ({e})") from None


def _picture_header(im) -> DicomHeader:
    width, height = im.size
    return DicomHeader(None, None, None, None, None, None, rows=height, columns=width,
                       pixel_spacing=None)


def _picture_pixels(path: str | Path, im) -> np.ndarray:
    """A PNG/JPEG as float32 [0, 1]: 16-bit grey / 65535, everything else as 8-bit grey / 255."""
    from PIL import ImageOps

    if getattr(im, "n_frames", 1) != 1:
        raise ImageReadError(path, f"the image has {im.n_frames} frames: {_NOT_GRAYSCALE}")
    try:
        im = ImageOps.exif_transpose(im)  # the orientation the file asks for (no-op for most)
        if im.mode.startswith("I;16") or im.mode == "I":
            pixels = np.asarray(im, dtype=np.float32)
            pixels *= np.float32(1.0 / 65535.0)
        else:
            pixels = np.asarray(im if im.mode == "L" else im.convert("L"), dtype=np.float32)
            pixels *= np.float32(1.0 / 255.0)
    except Exception as e:  # truncated or corrupt data surfaces only on load
        raise ImageReadError(path, f"the PNG/JPEG cannot be decoded ({e}); "
                             "the file may be truncated") from None
    return np.clip(pixels, 0.0, 1.0, out=pixels)
