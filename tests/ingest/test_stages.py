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
