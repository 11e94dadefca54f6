"""DICOM codec self-test: encode and decode tiny images with the installed pylibjpeg plugins.

Used by `regionmir doctor` (regionmir.doctor.checks.check_codecs). Nothing is read from disk.
"""

from __future__ import annotations


def _dataset(rows: int, bits: int, syntax):
    """An image-less square MONOCHROME2 dataset header with ``bits`` stored bits."""
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored, ds.HighBit = bits, bits - 1
    return ds


def round_trip_lossless() -> None:
    """Encode a 12-bit 32x32 ramp as JPEG 2000 and RLE with pylibjpeg, decode it, compare exactly.

    Raises:
        ImportError: a codec is not installed.
        ValueError: a codec decoded different pixels.
    """
    import numpy as np
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3)  # (32, 32), < 4096
    for uid in (JPEG2000Lossless, RLELossless):
        ds = _dataset(32, 12, ExplicitVRLittleEndian)
        ds.compress(uid, ramp, encoding_plugin="pylibjpeg")
        back, _ = get_decoder(uid).as_array(ds, decoding_plugin="pylibjpeg")
        if not np.array_equal(back, ramp):
            raise ValueError(f"{uid.name} decoded different pixels")


def decode_jpeg() -> None:
    """Encode an 8-bit JPEG with Pillow and decode it with pylibjpeg-libjpeg (lossy: near-equal).

    Raises:
        ImportError: a codec is not installed.
        ValueError: the decoded image differs.
    """
    import io

    import numpy as np
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGBaseline8Bit

    ramp = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)  # (32, 32)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="JPEG", quality=95)
    ds = _dataset(32, 8, JPEGBaseline8Bit)
    ds.PixelData = encapsulate([buf.getvalue()])
    back, _ = get_decoder(JPEGBaseline8Bit).as_array(ds, decoding_plugin="pylibjpeg")
    if back.shape != ramp.shape or np.abs(back.astype(int) - ramp).mean() > 8:
        raise ValueError("JPEG baseline decoded to a different image")
