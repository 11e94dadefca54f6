"""regionmir.regions: boxes, validation, the crop definition and normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regionmir.regions import Box, CropSpec, crop_region, crop_regions, normalize, square_window, validate_box


def asymmetric(h: int = 200, w: int = 240) -> np.ndarray:
    """Brighter to the right, a bright block top-left: any flip or transpose changes it."""
    img = np.tile(np.linspace(0.1, 0.6, w, dtype=np.float32), (h, 1))
    img[10:40, 15:35] = 1.0
    return img


# ----------------------------------------------------------------------------- Box


@pytest.mark.parametrize("text", ["1,2,30,40", "[1, 2, 30, 40]", "(1 2 30 40)", " 1.0, 2,30 ,40 "])
def test_parse(text):
    assert Box.parse(text) == Box(1, 2, 30, 40)


@pytest.mark.parametrize("text, message", [
    ("1,2,3", "four numbers"),
    ("1,2,3,4,5", "four numbers"),
    ("", "four numbers"),
    ("5,2,1,8", "empty"),
    ("1,8,5,8", "empty"),
    ("a,b,c,d", "could not convert"),
    ("nan,0,10,10", "not a finite number"),  # was "empty": true of no box with a NaN in it
    ("-inf,0,inf,10", "not a finite number"),
    ("0,0,1e400,10", "not a finite number"),
])
def test_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Box.parse(text)


def test_geometry():
    b = Box(10, 20, 40, 80)
    assert (b.width, b.height, b.area, b.center) == (30, 60, 1800, (25, 50))
    assert Box(5, 5, 1, 1).area == 0  # inverted boxes have no area
    assert Box(1.04, 2.06, 3, 4).as_list() == [1.0, 2.1, 3, 4]
    assert b.scale(0.5) == Box(5, 10, 20, 40)
    assert b.scale(2, 1) == Box(20, 20, 80, 80)
    assert Box(-5, -5, 50, 300).clip(40, 100) == Box(0, 0, 40, 100)


@pytest.mark.parametrize("a, b, expected", [
    (Box(0, 0, 10, 10), Box(0, 0, 10, 10), 1.0),
    (Box(0, 0, 10, 10), Box(20, 20, 30, 30), 0.0),
    (Box(0, 0, 10, 10), Box(10, 0, 20, 10), 0.0),  # touching edges
    (Box(0, 0, 2, 2), Box(1, 0, 3, 2), 2 / 6),  # half overlap
    (Box(0, 0, 4, 4), Box(1, 1, 3, 3), 4 / 16),  # contained
    (Box(0, 0, 10, 10), Box(5, 5, 15, 15), 25 / 175),
    (Box(0, 0, 0, 10), Box(0, 0, 0, 10), 0.0),  # empty
])
def test_iou(a, b, expected):
    assert a.iou(b) == pytest.approx(expected)
    assert b.iou(a) == pytest.approx(expected)


# ----------------------------------------------------------------------------- validate_box


def test_validate_keeps_inside_and_clips_partly_outside():
    assert validate_box(Box(10, 10, 50, 60), 100, 100) == (Box(10, 10, 50, 60), "")
    assert validate_box(Box(-10, 90, 50, 130), 100, 100) == (Box(0, 90, 50, 100), "")


@pytest.mark.parametrize("box, reason", [
    (Box(10, 10, 10, 50), "zero-area"),
    (Box(10, 50, 40, 20), "zero-area"),
    (Box(150, 10, 190, 50), "outside the 100x100 image"),
    (Box(-50, -50, -10, -10), "outside"),
    (Box(99, 10, 140, 50), "outside"),  # 1 px left inside
    (Box(10, 10, 11, 11), "smaller than 2 px"),
    (Box(math.nan, 0, 10, 10), "not finite"),
    (Box(0, 0, math.inf, 10), "not finite"),
])
def test_validate_drops(box, reason):
    clipped, why = validate_box(box, 100, 100)
    assert clipped is None and reason in why


# ----------------------------------------------------------------------------- crops


def test_square_window():
    assert square_window(Box(0, 0, 100, 50), 0.0) == Box(0, -25, 100, 75)
    assert square_window(Box(0, 0, 100, 100), 0.1) == Box(-10, -10, 110, 110)


def test_crop_without_resize_is_the_exact_window():
    img = asymmetric()
    crop = crop_region(img, Box(50, 40, 150, 140), CropSpec(size=100, context=0.0))
    np.testing.assert_array_equal(crop, img[40:140, 50:150])
    crop = crop_region(img, Box(50, 40, 150, 140), CropSpec(size=120, context=0.1))
    np.testing.assert_array_equal(crop, img[30:150, 40:160])


def test_crop_keeps_orientation():
    img = asymmetric(200, 200)  # block at rows 10..40, columns 15..35 -> 64/200 of that
    crop = crop_region(img, Box(0, 0, 200, 200), CropSpec(size=64, context=0.0))
    assert crop[40, 60] > crop[40, 5]  # still brighter to the right
    block = crop[5:11, 6:10].mean()
    assert block > 0.95
    assert block > crop[5:11, 54:58].mean() + 0.3  # the block stays on the left
    assert block > crop[53:59, 6:10].mean() + 0.3  # and on top


def test_crop_of_mirrored_image_is_the_mirrored_crop():
    """No hidden flip: cropping commutes with mirroring the image and the box."""
    img = asymmetric()
    h, w = img.shape
    box = Box(30, 20, 130, 120)
    mirrored_box = Box(w - box.x2, box.y1, w - box.x1, box.y2)
    spec = CropSpec(size=100, context=0.0)
    crop = crop_region(img, box, spec)
    np.testing.assert_array_equal(crop, img[20:120, 30:130])  # the pixels themselves, unflipped
    np.testing.assert_array_equal(crop_region(img[:, ::-1], mirrored_box, spec), crop[:, ::-1])


def test_crop_pads_outside_with_zero():
    img = np.ones((100, 100), dtype=np.float32)
    crop = crop_region(img, Box(0, 0, 40, 40), CropSpec(size=80, context=0.5))  # window -20..60
    assert crop.shape == (80, 80)
    assert np.all(crop[:20, :] == 0) and np.all(crop[:, :20] == 0)
    assert np.all(crop[20:, 20:] == 1)


def test_crop_fully_outside_is_black():
    img = np.ones((50, 50), dtype=np.float32)
    crop = crop_region(img, Box(200, 200, 240, 260), CropSpec(size=32))
    assert crop.shape == (32, 32) and not crop.any()


@pytest.mark.parametrize("box", [Box(10, 10, 20, 190), Box(0, 0, 240, 200), Box(100, 100, 103, 104)])
@pytest.mark.parametrize("size", [32, 128])
def test_crop_size_dtype_and_range(box, size):
    crop = crop_region(asymmetric(), box, CropSpec(size=size))
    assert crop.shape == (size, size) and crop.dtype == np.float32
    assert crop.min() >= 0.0 and crop.max() <= 1.0


def test_downsampled_crop_keeps_mean_brightness():
    img = asymmetric()
    crop = crop_region(img, Box(60, 60, 180, 180), CropSpec(size=40, context=0.0))
    assert crop.mean() == pytest.approx(img[60:180, 60:180].mean(), abs=1e-3)


def test_normalize():
    spec = CropSpec(size=4, mean=0.5, std=0.25)
    crops = np.stack([np.zeros((4, 4)), np.ones((4, 4))]).astype(np.float32)
    x = normalize(crops, spec)
    assert x.shape == (2, 1, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], -2.0)
    np.testing.assert_allclose(x[1], 2.0)


# ----------------------------------------------------------------------------- crop_regions


def _slow_area_crop(img: np.ndarray, win: Box, size: int) -> np.ndarray:
    """Reference: output pixel (i, j) = mean of the zero-padded image over its square of ``win``."""
    step = win.width / size
    out = np.zeros((size, size))
    h, w = img.shape
    for i in range(size):
        y0, y1 = win.y1 + i * step, win.y1 + (i + 1) * step
        for j in range(size):
            x0, x1 = win.x1 + j * step, win.x1 + (j + 1) * step
            total = 0.0
            for r in range(max(0, math.floor(y0)), min(h, math.ceil(y1))):
                oy = min(y1, r + 1) - max(y0, r)
                for c in range(max(0, math.floor(x0)), min(w, math.ceil(x1))):
                    total += oy * (min(x1, c + 1) - max(x0, c)) * img[r, c]
            out[i, j] = total / step**2
    return out


@pytest.mark.parametrize("box", [Box(5.3, 10.7, 45.1, 50.2), Box(-12.5, 110.2, 30.0, 148.9), Box(80.5, 8.2, 122.7, 50)])
def test_crop_regions_is_the_exact_area_mean(box):
    """Windows of 1-2x the output size (pyramid level 0): exact, sub-pixel, zero outside."""
    img = np.random.default_rng(0).random((150, 120), dtype=np.float32)
    spec = CropSpec(size=32, context=0.1)
    got = crop_regions(img, [box], spec)[0]
    np.testing.assert_allclose(got, _slow_area_crop(img, square_window(box, 0.1), 32), atol=1e-5)


def test_pyramid_levels_stay_close_to_the_full_resolution_area_mean():
    """Windows of 4-8x the output size are cut from a 4x-8x smaller pyramid level."""
    yy, xx = np.mgrid[0:400, 0:360] / 40.0
    img = (0.5 + 0.25 * np.sin(xx) * np.cos(0.7 * yy)).astype(np.float32)  # smooth film-like texture
    spec = CropSpec(size=24, context=0.0)
    for box in (Box(10.4, 20.6, 130.9, 141.1), Box(100.2, 50.7, 300.3, 250.8), Box(-30, 200, 170, 400)):
        ref = _slow_area_crop(img, square_window(box, 0.0), 24)
        np.testing.assert_allclose(crop_regions(img, [box], spec)[0], ref, atol=0.01)


def test_crop_regions_of_many_boxes_equals_one_box_at_a_time():
    img = asymmetric(300, 280)
    boxes = [Box(0, 0, 280, 300), Box(10, 10, 20, 190), Box(100, 100, 103, 104), Box(50.5, 60.2, 170.1, 140.9)]
    spec = CropSpec(size=32)
    many = crop_regions(img, boxes, spec)
    assert many.shape == (4, 32, 32) and many.dtype == np.float32
    for crop, box in zip(many, boxes):
        np.testing.assert_array_equal(crop, crop_region(img, box, spec))
    assert crop_regions(img, [], spec).shape == (0, 32, 32)


# ----------------------------------------------------------------------------- cardiothoracic ratio


def test_cardiothoracic_ratio_of_hand_computed_boxes():
    from regionmir.regions import ENLARGED, cardiothoracic_ratio

    boxes = {  # the patient's right lung lies on the image's left: x1 of the thorax comes from it
        "right-lung": Box(40, 50, 140, 300),
        "left-lung": Box(150, 60, 260, 310),
        "cardiac-silhouette": Box(100, 150, 218, 280),  # 118 px wide
        "trachea": Box(130, 0, 160, 120),  # other regions are ignored
    }
    assert cardiothoracic_ratio(boxes) == pytest.approx(118 / 220)  # thorax: 40 .. 260
    assert cardiothoracic_ratio(boxes) > ENLARGED == 0.5
    swapped = {**boxes, "right-lung": boxes["left-lung"], "left-lung": boxes["right-lung"]}
    assert cardiothoracic_ratio(swapped) == pytest.approx(118 / 220)  # outer edges, whichever side
    overlapping = {**boxes, "left-lung": Box(60, 60, 130, 310)}  # inside the right lung's span
    assert cardiothoracic_ratio(overlapping) == pytest.approx(118 / 100)
    for missing in ("right-lung", "left-lung", "cardiac-silhouette"):
        assert cardiothoracic_ratio({k: v for k, v in boxes.items() if k != missing}) is None
    flat = {**boxes, "right-lung": Box(40, 50, 40, 300), "left-lung": Box(40, 60, 40, 310)}
    assert cardiothoracic_ratio(flat) is None  # lungs without width: no ratio, no division by zero


def test_the_evaluation_uses_the_one_definition():
    from regionmir import regions
    from regionmir.evaluation.real import ctr

    assert ctr.cardiothoracic_ratio is regions.cardiothoracic_ratio and ctr.ENLARGED is regions.ENLARGED
