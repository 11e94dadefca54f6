"""Ingest stages alone: prepare (decode, find regions, crop, encode in a worker), batches, payload boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regionmir.archive import Archive
from regionmir.ingest.stages import ImageTask, Preparer, Skipped, batches


def test_preparer_crops_every_labeled_region(tiny_archive, tiny_model, home):
    from regionmir.inference.encoder import load_encoder

    spec = load_encoder(tiny_model).spec
    archive = Archive(tiny_archive)
    path = next(p for p in archive.dicom_paths() if archive.regions(p.stem))
    out = Preparer(archive.root, spec)(ImageTask(path, archive.relative(path), path.stem))
    regions = archive.regions(path.stem)
    assert out.crops.shape == (len(regions), spec.size, spec.size)
    assert [r["anatomy"] for r in out.regions] == [r.anatomy.slug for r in regions]
    assert [r["box"] for r in out.regions] == [r.box.as_list() for r in regions]
    assert out.fields["box_source"] == "annotation" and all(r["confidence"] is None for r in out.regions)


def test_a_worker_that_encodes_returns_the_encoders_embeddings(tiny_archive, tiny_model, home):
    from regionmir.inference.encoder import load_encoder

    encoder = load_encoder(tiny_model)
    archive = Archive(tiny_archive)
    path = next(p for p in archive.dicom_paths() if archive.regions(p.stem))
    task = ImageTask(path, archive.relative(path), path.stem)
    crops = Preparer(archive.root, encoder.spec)(task)
    encoded = Preparer(archive.root, encoder.spec, encoder=encoder.path)(task)
    assert encoded.crops is None and encoded.regions == crops.regions
    np.testing.assert_allclose(encoded.embeddings, encoder.embed(crops.crops)[0], atol=1e-5)


def test_batches_keep_images_whole_and_report_skips(tiny_archive):
    task = ImageTask(Path("x.dcm"), "x.dcm", "x")

    class P:  # a prepared image with n regions, as far as `batches` looks
        def __init__(self, n):
            self.regions = [None] * n

    skipped = []
    stream = [P(3), Skipped(task, "failed", "bad"), P(3), P(2), P(5)]
    got = list(batches(stream, 5, skipped.append))
    assert [[len(p.regions) for p in b] for b in got] == [[3, 3], [2, 5]]
    assert [s.reason for s in skipped] == ["bad"]


def test_payload_boxes_keep_whole_pixels_as_ints():
    from regionmir.ingest.stages import payload_box
    from regionmir.regions import Box

    box = payload_box(Box(12.0, 40.0, 300.25, 420.0))
    assert box == [12, 40, 300.2, 420] and [type(v) for v in box] == [int, int, float, int]
    clipped = payload_box(Box(12.5, 40.0, 300.0, 420.0).clip(256, 256))  # clip() leaves the int 256
    assert clipped == [12.5, 40, 256, 256] and [type(v) for v in clipped] == [float, int, int, int]


# ----------------------------------------------------------------------------- cardiothoracic ratio


def _hand_ctr(boxes: dict) -> float:
    """Heart width over the lungs' outer span, written out: the payload's ``ctr`` to 3 decimals."""
    heart, right, left = boxes["cardiac-silhouette"], boxes["right-lung"], boxes["left-lung"]
    return round((heart.x2 - heart.x1) / (max(right.x2, left.x2) - min(right.x1, left.x1)), 3)


def test_every_film_with_heart_and_lungs_carries_its_ctr(tiny_archive, home):
    from regionmir.regions import CropSpec

    archive = Archive(tiny_archive)
    seen = 0
    for path in archive.dicom_paths():
        regions = archive.regions(path.stem)
        if not regions:
            continue
        out = Preparer(archive.root, CropSpec(size=32))(ImageTask(path, archive.relative(path), path.stem))
        boxes = {r.anatomy.slug: r.box for r in regions}
        assert out.fields["ctr"] == _hand_ctr(boxes) and isinstance(out.fields["ctr"], float)
        seen += 1
    assert seen >= 10


def _bare_copy(src: Path, dst: Path) -> tuple[Archive, Path]:
    """A copy of ``src`` whose first image has no scene graph: (the copy, that image)."""
    import shutil

    shutil.copytree(src, dst)
    archive = Archive(dst)
    path = archive.dicom_paths()[0]
    archive.scene_graph_path(path.stem).unlink()
    return Archive(dst), path


BOXES = {"right-lung": (20, 40, 100, 220), "left-lung": (105, 45, 190, 225), "cardiac-silhouette": (70, 120, 160, 210)}


def test_gold_csv_boxes_give_the_ctr(tiny_archive, tmp_path, home):
    from regionmir.archive import GOLD_CSV
    from regionmir.regions import Box, CropSpec

    archive, path = _bare_copy(tiny_archive, tmp_path / "a")
    rows = [f'{path.stem}.dcm,{name.replace("-", " ")},"[{", ".join(map(str, b))}]"' for name, b in BOXES.items()]
    (archive.root / GOLD_CSV).write_text("image_id,bbox_name,coord_original\n" + "\n".join(rows) + "\n")
    out = Preparer(Archive(archive.root).root, CropSpec(size=32))(ImageTask(path, archive.relative(path), path.stem))
    assert out.fields["box_source"] == "annotation" and len(out.regions) == 3
    assert out.fields["ctr"] == _hand_ctr({k: Box(*v) for k, v in BOXES.items()}) == round(90 / 170, 3)


def test_localizer_boxes_give_the_ctr_and_a_film_without_a_heart_has_none(tiny_archive, tmp_path, home):
    from regionmir.anatomy import Anatomy
    from regionmir.annotations import Region
    from regionmir.regions import Box, CropSpec

    archive, path = _bare_copy(tiny_archive, tmp_path / "a")

    class Localizer:  # what Localizer.locate returns: regions in original pixels, with a confidence
        def __init__(self, names):
            self.names = names

        def locate(self, image):
            return [Region(Anatomy.parse(n), Box(*map(float, BOXES[n])), confidence=0.9) for n in self.names]

    task = ImageTask(path, archive.relative(path), path.stem)
    for names, want in ((list(BOXES), round(90 / 170, 3)), (["right-lung", "left-lung"], None)):
        prep = Preparer(archive.root, CropSpec(size=32))
        prep._localizer, prep._localizer_loaded = Localizer(names), True
        out = prep(task)
        assert out.fields["box_source"] == "predicted"
        assert out.fields.get("ctr") == want and ("ctr" in out.fields) == (want is not None)  # absent, not null
