"""Region crop datasets: view 0 is the inference crop, jitter happens on the box, splits hash stably."""

import dataclasses

import numpy as np
import pytest

from regionmir.anatomy import Anatomy
from regionmir.annotations import Region, SceneGraph
from regionmir.archive import Archive
from regionmir.errors import AnnotationError
from regionmir.regions import Box, CropSpec, crop_region
from regionmir.train.data import (
    boxes_in_pixels,
    build_cropset,
    eval_split,
    fingerprint,
    jitter_box,
    present_classes,
)


def _sample(seed=0, size=96, anatomies=(Anatomy.LEFT_LUNG, Anatomy.RIGHT_LUNG, Anatomy.SPINE)):
    rng = np.random.default_rng(seed)
    img = rng.random((size, size), dtype=np.float32)
    regions = tuple(Region(a, Box(10 + 5 * i, 12, 50 + 5 * i, 70)) for i, a in enumerate(anatomies))
    return img, SceneGraph(f"id{seed}", "s1", "p1", "PA", size, size, regions)


def test_view_zero_is_exactly_the_inference_crop():
    img, sg = _sample()
    spec = CropSpec(size=24, context=0.15)
    classes = present_classes([sg])
    crops = build_cropset([(img, sg)], classes, spec, jitter_views=3)
    assert crops.views.shape == (3, 4, 24, 24)
    for i, region in enumerate(sg.regions):
        expected = crop_region(img, region.box, spec)
        np.testing.assert_allclose(crops.clean[i], expected, atol=1e-3)  # float16 storage
        assert crops.labels[i] == classes.index(region.anatomy)
        assert not np.allclose(crops.views[i, 1], crops.views[i, 0], atol=1e-3)


def test_classes_follow_anatomy_order_and_unknown_are_skipped():
    img, sg = _sample()
    assert present_classes([sg]) == (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG, Anatomy.SPINE)
    crops = build_cropset([(img, sg)], (Anatomy.SPINE,), CropSpec(size=16), jitter_views=0)
    assert len(crops) == 1 and crops.labels.tolist() == [0]
    with pytest.raises(AnnotationError, match="No labeled regions"):
        build_cropset([(img, sg)], (Anatomy.TRACHEA,), CropSpec(size=16))


def test_jitter_moves_the_box_a_little_and_never_mirrors():
    box = Box(100, 50, 200, 250)
    rng = np.random.default_rng(0)
    for _ in range(200):
        j = jitter_box(box, rng, 0.08)
        assert j.x2 > j.x1 and j.y2 > j.y1
        assert abs(j.center[0] - box.center[0]) <= 0.08 * box.width + 1e-9
        assert 0.9 < j.width / box.width < 1.1 and 0.9 < j.height / box.height < 1.1


def test_boxes_scale_to_a_downsampled_image():
    _, sg = _sample(size=96)
    (a, box), *_ = boxes_in_pixels(sg, (48, 48))
    assert box == sg.regions[0].box.scale(0.5)
    assert boxes_in_pixels(sg, (96, 96))[0][1] == sg.regions[0].box


def test_fingerprint_is_order_free_and_content_sensitive():
    graphs = [_sample(s)[1] for s in range(3)]
    assert fingerprint(graphs) == fingerprint(graphs[::-1])
    moved = dataclasses.replace(graphs[0], regions=(Region(Anatomy.SPINE, Box(1, 1, 40, 40)),))
    assert fingerprint([moved, *graphs[1:]]) != fingerprint(graphs)


def test_eval_split_prefers_test(tmp_path):
    from helpers.train_archive import write_png_archive

    archive = Archive(write_png_archive(tmp_path / "a", images=10, size=64))
    assert eval_split(archive) == "test"
    (tmp_path / "a" / "splits" / "test.csv").write_text("dicom_id,subject_id,study_id,path\n")
    assert eval_split(archive) == "valid"
