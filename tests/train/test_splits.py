"""scan_split lists a split as the old in-memory pairs did: same images, order, anatomies, classes, fingerprint."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from regionmir.anatomy import Anatomy
from regionmir.archive import Archive
from regionmir.errors import AnnotationError
from regionmir.train.data import fingerprint, present_classes
from regionmir.train.splits import scan_split


@pytest.mark.parametrize("name", ["train", "test"])
def test_scan_matches_the_scene_graphs_it_walked(tiny_archive, name):
    archive = Archive(tiny_archive)
    pairs = list(archive.iter_split(name))
    scan = scan_split(archive, name)
    assert len(scan) == len(pairs) > 0
    assert scan.image_ids == [sg.image_id for _, sg in pairs]
    assert [str(p) for p, _ in pairs] == scan.paths
    assert scan.fingerprint == fingerprint(sg for _, sg in pairs)
    assert scan.classes() == present_classes(sg for _, sg in pairs)
    for i, (path, sg) in enumerate(pairs):
        assert scan.item(i) == (path, sg)
        assert scan.anatomies[scan.starts[i]:scan.starts[i + 1]].tolist() == [r.anatomy.index for r in sg.regions]


def test_labels_keep_only_the_given_classes_in_their_order(tiny_archive):
    archive = Archive(tiny_archive)
    pairs = list(archive.iter_split("train"))
    scan = scan_split(archive, "train")
    classes = (Anatomy.SPINE, Anatomy.LEFT_LUNG, Anatomy.RIGHT_LUNG)  # not Anatomy order: positions follow this
    labels, starts = scan.labels(classes)
    want = [[classes.index(r.anatomy) for r in sg.regions if r.anatomy in classes] for _, sg in pairs]
    assert labels.tolist() == [x for w in want for x in w]
    assert starts.tolist() == np.concatenate([[0], np.cumsum([len(w) for w in want])]).tolist()
    assert set(labels.tolist()) == {0, 1, 2}


def test_fingerprint_is_order_free_and_sees_every_graph(tiny_archive, tmp_path):
    copy = tmp_path / "archive"
    shutil.copytree(tiny_archive, copy)
    before = scan_split(Archive(copy), "train")
    split = copy / "splits" / "train.csv"
    head, *rows = split.read_text().splitlines()
    split.write_text("\n".join([head, *rows[::-1]]) + "\n")  # same images, other order
    reordered = scan_split(Archive(copy), "train")
    assert reordered.fingerprint == before.fingerprint and reordered.image_ids == before.image_ids[::-1]
    split.write_text("\n".join([head, *rows[1:]]) + "\n")  # one image fewer
    assert scan_split(Archive(copy), "train").fingerprint != before.fingerprint


def test_a_scene_graph_that_vanishes_before_the_cut_is_named(tiny_archive, tmp_path):
    copy = tmp_path / "archive"
    shutil.copytree(tiny_archive, copy)
    scan = scan_split(Archive(copy), "train")
    (copy / "scene_graph" / f"{scan.image_ids[1]}_SceneGraph.json").unlink()
    scan.item(0)
    with pytest.raises(AnnotationError, match=f"{scan.image_ids[1]} changed or vanished"):
        scan.item(1)


def test_a_split_without_scene_graphs_scans_empty(tiny_archive, tmp_path):
    copy = tmp_path / "archive"
    shutil.copytree(tiny_archive, copy)
    shutil.rmtree(copy / "scene_graph")
    scan = scan_split(Archive(copy), "train")
    assert len(scan) == 0 and scan.classes() == () and scan.starts.tolist() == [0]
