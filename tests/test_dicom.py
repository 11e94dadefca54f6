"""regionmir.dicom: decoding, display pipeline (modality, VOI, MONOCHROME1), PNG/JPEG, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers.dicom_files import PATIENT, break_voi_lut, write_dicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import (
    JPEG2000Lossless,
    RLELossless,
)

from regionmir.dicom import DicomHeader, read_header, read_image
from regionmir.errors import ImageReadError


def pydicom_file(name: str) -> str:
    """A file from pydicom's own test data or the installed pydicom-data package."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install pydicom-data)")
    return path


def compressed_copy(src: Path, dst: Path, tsyntax) -> Path:
    ds = pydicom.dcmread(src)
    ds.compress(tsyntax)
    ds.save_as(dst)
    return dst


def ramp(h: int = 60, w: int = 80, top: int = 4095) -> np.ndarray:
    """A left-to-right ramp with a bright top-left corner: asymmetric in both directions."""
    arr = np.tile(np.linspace(0, top * 0.8, w), (h, 1))
    arr[: h // 4, : w // 4] = top
    return arr.astype(np.uint16)


def assert_no_patient_data(message: str) -> None:
    for value in PATIENT.values():
        assert value not in message
    assert "Doe" not in message and "Jane" not in message


# ----------------------------------------------------------------------------- real chest CR


@pytest.fixture(scope="module")
def rg1() -> dict[str, np.ndarray]:
    """The four encodings of pydicom's chest CR (MONOCHROME1, 15 bit, zero PixelSpacing)."""
    return {n: read_image(pydicom_file(f"RG1_{n}.dcm")).pixels for n in ("UNCR", "UNCI", "J2KR", "J2KI")}


def test_real_chest_cr_decodes_to_unit_float32(rg1):
    for name, pixels in rg1.items():
        assert pixels.shape == (1955, 1841), name
        assert pixels.dtype == np.float32, name
        assert 0.0 <= pixels.min() and pixels.max() <= 1.0, name
        assert pixels.std() > 0.1, f"{name} is nearly flat"


def test_lossless_encodings_agree_exactly(rg1):
    np.testing.assert_array_equal(rg1["UNCR"], rg1["J2KR"])
    # UNCI is the irreversible J2K image stored uncompressed: the same pixels as J2KI
    np.testing.assert_array_equal(rg1["UNCI"], rg1["J2KI"])


def test_irreversible_encoding_stays_close(rg1):
    a, b = rg1["UNCR"].ravel(), rg1["J2KI"].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert np.abs(a - b).mean() < 0.01


def test_monochrome1_chest_is_inverted_lungs_dark_spine_bright(rg1):
    img = rg1["UNCR"]
    h, w = img.shape
    right_lung = img[int(h * 0.3): int(h * 0.5), int(w * 0.2): int(w * 0.35)].mean()
    left_lung = img[int(h * 0.3): int(h * 0.5), int(w * 0.62): int(w * 0.78)].mean()
    spine = img[int(h * 0.3): int(h * 0.5), int(w * 0.46): int(w * 0.54)].mean()
    assert right_lung < spine - 0.1 and left_lung < spine - 0.1


def test_real_chest_header(tmp_path):
    header = read_header(pydicom_file("RG1_UNCR.dcm"))
    assert isinstance(header, DicomHeader)
    assert (header.rows, header.columns) == (1955, 1841)
    assert header.modality == "CR" and header.view == "PA"
    assert header.pixel_spacing is None  # the file says 0.0\0.0
    assert header.sop_instance_uid and header.study_instance_uid and header.series_instance_uid


def test_second_real_cr_lossless_and_lossy_agree():
    a = read_image(pydicom_file("RG3_UNCR.dcm")).pixels
    np.testing.assert_array_equal(a, read_image(pydicom_file("RG3_J2KR.dcm")).pixels)
    b = read_image(pydicom_file("RG3_J2KI.dcm")).pixels
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("other", [
    "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
])
def test_codecs_and_byte_orders_give_identical_images(other):
    np.testing.assert_array_equal(read_image(pydicom_file("MR_small.dcm")).pixels,
                                  read_image(pydicom_file(other)).pixels)


def test_jpeg_lossless_and_deflate_decode():
    jpeg_ll = read_image(pydicom_file("JPEG-LL.dcm")).pixels  # JPEG lossless, process 14 SV1
    assert jpeg_ll.shape == (1024, 256) and jpeg_ll.std() > 0.05
    assert read_image(pydicom_file("image_dfl.dcm")).pixels.shape == (512, 512)  # deflated


# ----------------------------------------------------------------------------- display pipeline


def reference_display(path: Path) -> np.ndarray:
    """The slow, obvious pipeline: pydicom's float64 LUT functions, scaled by BitsStored."""
    ds = pydicom.dcmread(path)
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    out = values / (2 ** ds.BitsStored - 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 1 - out
    return out


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_window_matches_pydicom_reference(tmp_path, function, photometric):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 4096, size=(50, 70)).astype(np.uint16)
    path = write_dicom(tmp_path / "w.dcm", arr, photometric, 12, WindowCenter=1500,
                       WindowWidth=1800, VOILUTFunction=function)
    np.testing.assert_allclose(read_image(path).pixels, reference_display(path), atol=2e-6)


def test_first_of_several_windows_is_used(tmp_path):
    arr = ramp()
    multi = write_dicom(tmp_path / "m.dcm", arr, bits_stored=12, WindowCenter=[1000, 3000],
                        WindowWidth=[500, 4000])
    single = write_dicom(tmp_path / "s.dcm", arr, bits_stored=12, WindowCenter=1000,
                         WindowWidth=500)
    np.testing.assert_array_equal(read_image(multi).pixels, read_image(single).pixels)


def test_rescale_is_applied_before_window(tmp_path):
    arr = ramp()
    rescaled = write_dicom(tmp_path / "r.dcm", arr, bits_stored=12, RescaleSlope=2,
                           RescaleIntercept=-1000, WindowCenter=2000, WindowWidth=3000)
    plain = write_dicom(tmp_path / "p.dcm", (arr.astype(np.int32) * 2 - 1000).astype(np.int16),
                        bits_stored=16, WindowCenter=2000, WindowWidth=3000)
    np.testing.assert_allclose(read_image(rescaled).pixels, read_image(plain).pixels, atol=1e-6)


def test_voi_lut_sequence_is_used(tmp_path):
    path = pydicom_file("vlut_04.dcm")
    np.testing.assert_allclose(read_image(path).pixels, reference_display(path) * 255 / 65535,
                               atol=1e-6)


def test_no_window_uses_percentiles_not_bits_stored(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(1000, 3000, size=(64, 64)).astype(np.uint16)
    img = read_image(write_dicom(tmp_path / "a.dcm", arr, bits_stored=12)).pixels
    lo, hi = np.percentile(arr, (0.5, 99.5))
    np.testing.assert_allclose(img, np.clip((arr - lo) / (hi - lo), 0, 1), atol=1e-6)
    # the same values declared as 16-bit give the same picture
    img16 = read_image(write_dicom(tmp_path / "b.dcm", arr, bits_stored=16)).pixels
    np.testing.assert_array_equal(img, img16)


def test_flat_image_without_window_falls_back_to_bits_stored(tmp_path):
    arr = np.full((20, 30), 1023, dtype=np.uint16)
    img = read_image(write_dicom(tmp_path / "f.dcm", arr, bits_stored=12)).pixels
    np.testing.assert_allclose(img, 1023 / 4095, atol=1e-6)


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path):
    arr = ramp()
    m1 = read_image(write_dicom(tmp_path / "1.dcm", arr, "MONOCHROME1", 12)).pixels
    m2 = read_image(write_dicom(tmp_path / "2.dcm", arr, "MONOCHROME2", 12)).pixels
    np.testing.assert_allclose(m1 + m2, 1.0, atol=1e-6)
    assert m2[0, 0] == 1.0 and m1[0, 0] == 0.0  # the brightest stored value


def test_orientation_is_kept(tmp_path):
    arr = ramp()
    img = read_image(write_dicom(tmp_path / "o.dcm", arr, bits_stored=12)).pixels
    assert img[-1, -1] > img[-1, 0]  # the ramp still rises to the right
    assert img[0, 0] > img[-1, 0]  # the bright block is still top-left


def test_compressed_synthetic_copies_are_identical(tmp_path):
    arr = np.random.default_rng(2).integers(0, 4096, size=(48, 64)).astype(np.uint16)
    src = write_dicom(tmp_path / "u.dcm", arr, bits_stored=12)  # no window: percentiles
    expected = read_image(src).pixels
    for tsyntax in (RLELossless, JPEG2000Lossless):
        copy = compressed_copy(src, tmp_path / f"{tsyntax}.dcm", tsyntax)
        np.testing.assert_array_equal(read_image(copy).pixels, expected)


def test_signed_pixels(tmp_path):
    arr = (ramp().astype(np.int32) - 2048).astype(np.int16)
    img = read_image(write_dicom(tmp_path / "s.dcm", arr, bits_stored=12, WindowCenter=0,
                                 WindowWidth=4096)).pixels
    assert img[-1, -1] > 0.7 and img[-1, 0] < 0.05


# ----------------------------------------------------------------------------- header


@pytest.mark.parametrize("elements, expected", [
    ({"PixelSpacing": [0.139, 0.14]}, (0.139, 0.14)),
    ({"PixelSpacing": [0, 0]}, None),
    ({"ImagerPixelSpacing": [0.2, 0.2]}, (0.2, 0.2)),
    ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.2, 0.2]}, (0.2, 0.2)),
    ({"PixelSpacing": [0.1, 0.1], "ImagerPixelSpacing": [0.2, 0.2]}, (0.1, 0.1)),
    ({}, None),
])
def test_pixel_spacing(tmp_path, elements, expected):
    header = read_header(write_dicom(tmp_path / "h.dcm", ramp(), **elements))
    assert header.pixel_spacing == (pytest.approx(expected) if expected else None)


def test_header_fields_and_patient_id_kept_out_of_repr(tmp_path):
    path = write_dicom(tmp_path / "h.dcm", ramp(), ViewPosition="AP ")
    header = read_header(path)
    assert header.patient_id == PATIENT["PatientID"]  # for privacy.pseudonym only
    assert header.view == "AP" and header.modality == "DX" and (header.rows, header.columns) == (60, 80)
    assert_no_patient_data(repr(header))
    assert read_image(path).header == header


def test_header_does_not_need_pixels(tmp_path):
    path = write_dicom(tmp_path / "h.dcm", ramp())
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 100])
    assert read_header(cut).rows == 60
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(cut)


# ----------------------------------------------------------------------------- PNG / JPEG


def test_png_8_and_16_bit(tmp_path):
    arr8 = (ramp(top=255)).astype(np.uint8)
    Image.fromarray(arr8).save(tmp_path / "a.png")
    rad = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(rad.pixels, arr8 / 255, atol=1e-6)
    assert rad.header == DicomHeader(None, None, None, None, None, None, 60, 80, None)
    arr16 = ramp(top=65535)
    Image.fromarray(arr16).save(tmp_path / "b.png")
    np.testing.assert_allclose(read_image(tmp_path / "b.png").pixels, arr16 / 65535, atol=1e-6)
    assert read_header(tmp_path / "b.png").rows == 60


def test_rgb_png_and_jpeg_become_grey(tmp_path):
    arr8 = ramp(top=255).astype(np.uint8)
    Image.fromarray(np.stack([arr8] * 3, axis=-1)).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png").pixels, arr8 / 255, atol=1e-6)
    Image.fromarray(arr8).save(tmp_path / "a.jpg", quality=95)
    jpeg = read_image(tmp_path / "a.jpg").pixels
    assert jpeg.shape == (60, 80) and np.abs(jpeg - arr8 / 255).mean() < 0.02


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_png_or_jpeg(tmp_path, suffix):
    noise = np.random.default_rng(3).integers(0, 256, size=(200, 200)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / f"a.{suffix}")
    data = (tmp_path / f"a.{suffix}").read_bytes()
    (tmp_path / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=rf"cut\.{suffix}.*truncated"):
        read_image(tmp_path / f"cut.{suffix}")


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name, reason", [
    ("test-SR.dcm", r"Comprehensive SR Storage.*not an image"),
    ("rtplan.dcm", r"RT Plan Storage.*not an image"),
    ("SC_rgb.dcm", r"RGB with 3 sample\(s\).*not a single-frame grayscale radiograph"),
    ("OBXXXX1A.dcm", r"PALETTE COLOR.*not a single-frame grayscale"),
    ("emri_small.dcm", r"10 frames: not a single-frame grayscale radiograph"),
    ("MR_truncated.dcm", r"less than expected.*truncated or corrupt"),
    ("no_meta.dcm", r"not a DICOM file"),
])
def test_unusable_test_files(name, reason):
    path = pydicom_file(name)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_non_image_header_is_refused_too():
    with pytest.raises(ImageReadError, match="SR Storage"):
        read_header(pydicom_file("test-SR.dcm"))


def test_missing_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "np.dcm", ramp(), PixelData=None)
    with pytest.raises(ImageReadError, match="no pixel data") as info:
        read_image(path)
    assert_no_patient_data(str(info.value))


def test_multiframe_and_rgb_synthetic(tmp_path):
    frames = np.stack([ramp(), ramp()])
    with pytest.raises(ImageReadError, match="2 frames"):
        read_image(write_dicom(tmp_path / "mf.dcm", frames, bits_stored=12))
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    with pytest.raises(ImageReadError, match="RGB"):
        read_header(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB"))


@pytest.mark.filterwarnings("ignore:End of file reached")
@pytest.mark.parametrize("fraction", [0.5, 0.05])
def test_truncated_copies(tmp_path, fraction):
    for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm"):
        data = Path(pydicom_file(name)).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(ImageReadError, match=rf"cut_{name[:-4]}.*truncated"):
            read_image(cut)


def test_truncated_file_message_has_no_patient_data(tmp_path):
    path = write_dicom(tmp_path / "p.dcm", ramp())
    data = path.read_bytes()
    path.write_bytes(data[:-500])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert_no_patient_data(str(info.value))


def test_text_empty_missing_and_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image\n" * 20)
    (tmp_path / "empty.dcm").write_bytes(b"")
    cases = {"notes.txt": "not a DICOM file", "empty.dcm": "empty", "gone.dcm": "does not exist",
             ".": "folder"}
    for name, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason):
            read_image(tmp_path / name)


def test_transfer_syntax_without_decoder(tmp_path):
    path = write_dicom(tmp_path / "mpeg.dcm", ramp())
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2, no decoder in pydicom
    ds.PixelData = encapsulate([ds.PixelData])
    ds.save_as(path)
    with pytest.raises(ImageReadError, match=r"MPEG2 .*cannot be decoded by pydicom"):
        read_image(path)


def test_missing_codec_names_the_pip_install(monkeypatch):
    real = Decoder.is_available

    def without_j2k(self):
        return False if "JPEG 2000" in self.UID.name else real.fget(self)

    monkeypatch.setattr(Decoder, "is_available", property(without_j2k))
    with pytest.raises(ImageReadError, match=r"JPEG 2000.*pip install pylibjpeg pylibjpeg-openjpeg"):
        read_image(pydicom_file("RG1_J2KR.dcm"))
    assert read_image(pydicom_file("MR_small_RLE.dcm")).pixels.shape == (64, 64)


def test_malformed_voi_lut_is_an_image_read_error(tmp_path):
    path = break_voi_lut(write_dicom(tmp_path / "lut.dcm", ramp().astype(np.uint8) // 32 * 32, bits_stored=8))
    with pytest.raises(ImageReadError, match=r"lut\.dcm.*VOI LUT cannot be applied"):
        read_image(path)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_voi_lut_sequence_scales_by_its_bit_depth_then_inverts_monochrome1(tmp_path, photometric):
    """A 12-bit VOI LUT whose entries stop at 2000: the display is entry / 4095 (the descriptor's
    third value), not entry / 2000 (its largest entry) nor anything from the first two values;
    MONOCHROME1 is inverted after the LUT, as without one."""
    stored = (np.arange(40 * 64) % 256).reshape(40, 64).astype(np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", stored, photometric, bits_stored=8)
    lut = np.rint(np.arange(256) * 2000 / 255).astype(np.uint16)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 12])  # entries, first mapped value, bits per entry
    item.add_new("LUTData", "US", lut.tolist())
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    expected = lut[stored].astype(np.float64) / 4095
    if photometric == "MONOCHROME1":
        expected = 1 - expected
    np.testing.assert_allclose(read_image(path).pixels, expected, atol=1e-6)


@pytest.mark.parametrize("window", [True, False])
def test_a_nan_rescale_slope_is_an_image_read_error(tmp_path, window):
    """A NaN RescaleSlope makes every value NaN (or, without a window, a blank film); NaN boxes and
    vectors poisoned whole ingests and crashed the listener: refuse the image where it is decoded."""
    extra = {"WindowCenter": "2000", "WindowWidth": "4000"} if window else {}
    path = write_dicom(tmp_path / "nan.dcm", ramp(), bits_stored=12, RescaleSlope="NaN", RescaleIntercept="0", **extra)
    with pytest.raises(ImageReadError, match=r"nan\.dcm.*RescaleSlope nan .* is not a finite number"):
        read_image(path)


def test_float_pixel_data_with_nan_is_an_image_read_error(tmp_path):
    ds = pydicom.dcmread(write_dicom(tmp_path / "f.dcm", ramp(), bits_stored=12))
    values = ramp().astype(np.float32)
    values[5, 5] = np.nan
    del ds.PixelData
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    del ds.PixelRepresentation
    ds.FloatPixelData = values.tobytes()
    ds.save_as(tmp_path / "f.dcm")
    with pytest.raises(ImageReadError, match="decode to NaN"):
        read_image(tmp_path / "f.dcm")


@pytest.mark.parametrize("read", [read_image, read_header])
def test_a_header_value_of_impossible_length_is_an_image_read_error(tmp_path, read):
    """A 1-byte SamplesPerPixel (US is 2 bytes): pydicom fails only when the value is first read,
    with a BytesLengthException that once reached the user as a traceback."""
    path = write_dicom(tmp_path / "spp.dcm", ramp(), bits_stored=12)
    raw = path.read_bytes()
    at = raw.index(b"\x28\x00\x02\x00US\x02\x00")
    path.write_bytes(raw[:at + 6] + b"\x01\x00\x01" + raw[at + 10:])
    with pytest.raises(ImageReadError, match=r"spp\.dcm: its header is damaged: element \(0028,0002\) has a "
                                             "value of the wrong length"):
        read(path)
