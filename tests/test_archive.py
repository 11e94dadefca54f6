"""regionmir.archive: the MIMIC-CXR + Chest ImaGenome folder layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from regionmir.anatomy import Anatomy
from regionmir.annotations import Region, SceneGraph, write_scene_graph
from regionmir.archive import GOLD_CSV, Archive, SplitRow, write_split
from regionmir.errors import AnnotationError
from regionmir.regions import Box

DATA = Path(__file__).parent / "data"
IMAGE_1 = "d0e1f2a3-5b6c7d8e-9f0a1b2c-3d4e5f60-71829304"  # in both excerpts
IMAGE_2 = "9a8b7c6d-0e1f2a3b-4c5d6e7f-8a9b0c1d-2e3f4a5b"  # gold CSV only
IMAGE_3 = "3c3c3c3c-00000000-11111111-22222222-33333333"  # no annotation


def dicom_rel(subject: str, study: str, dicom_id: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.dcm"


@pytest.fixture
def archive(tmp_path) -> Path:
    """A MIMIC-CXR style tree; the .dcm files are placeholders (nothing here decodes them)."""
    root = tmp_path / "archive"
    rows = [SplitRow(IMAGE_1, "10000099", "50000077", dicom_rel("10000099", "50000077", IMAGE_1)),
            SplitRow(IMAGE_2, "10000099", "50000078", dicom_rel("10000099", "50000078", IMAGE_2)),
            SplitRow(IMAGE_3, "11000001", "50000090", dicom_rel("11000001", "50000090", IMAGE_3))]
    for row in rows:
        (root / row.path).parent.mkdir(parents=True, exist_ok=True)
        (root / row.path).write_bytes(b"placeholder")
    (root / "files" / "notes.txt").write_text("not a dicom")
    (root / "scene_graph").mkdir()
    shutil.copy(DATA / "scene_graph_excerpt.json", root / "scene_graph" / f"{IMAGE_1}_SceneGraph.json")
    shutil.copy(DATA / "gold_bbox_excerpt.csv", root / GOLD_CSV)
    write_split(root, "train", rows[:2])
    write_split(root, "test", rows[2:])
    return root


def test_not_a_folder(tmp_path):
    with pytest.raises(AnnotationError, match="is not a folder.*regionmir phantom"):
        Archive(tmp_path / "missing")


def test_dicom_paths_are_sorted_dcm_files_under_files(archive):
    (archive / "stray.dcm").write_bytes(b"outside files/")
    paths = Archive(archive).dicom_paths()
    assert {p.stem for p in paths} == {IMAGE_1, IMAGE_2, IMAGE_3}
    assert paths == sorted(paths) and len(paths) == 3
    assert all(p.suffix == ".dcm" and "files" in p.parts for p in paths)


def test_bare_folder_of_dicoms(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(b"")
    (tmp_path / "y.dcm").write_bytes(b"")
    assert [p.name for p in Archive(tmp_path).dicom_paths()] == ["x.dcm", "y.dcm"]


def test_relative_paths(archive, monkeypatch):
    arc = Archive(archive)
    path = arc.dicom_paths()[0]
    rel = arc.relative(path)
    assert not rel.startswith("/") and rel.startswith("files/p1") and "\\" not in rel
    assert archive / rel == path
    monkeypatch.chdir(archive.parent)  # a root given relative to the working directory
    arc2 = Archive("archive")
    assert arc2.relative(arc2.dicom_paths()[0]) == rel


def test_scene_graph_lookup(archive):
    arc = Archive(archive)
    assert arc.scene_graph_path(IMAGE_1) == archive / "scene_graph" / f"{IMAGE_1}_SceneGraph.json"
    sg = arc.scene_graph(IMAGE_1)
    assert sg.image_id == IMAGE_1 and sg.region("left lung") is not None
    assert arc.scene_graph(IMAGE_3) is None


@pytest.mark.parametrize("folder", ["scene_graphs", "."])
def test_scene_graph_in_other_folders(archive, folder):
    sg = SceneGraph(IMAGE_3, "50000090", "11000001", "PA", 100, 100,
                    (Region(Anatomy.SPINE, Box(40, 0, 60, 100)),))
    write_scene_graph(sg, archive / folder)
    assert Archive(archive).scene_graph(IMAGE_3) == sg


def test_scene_graph_beside_the_dicom(archive):
    dicom = archive / dicom_rel("11000001", "50000090", IMAGE_3)
    sg = SceneGraph(IMAGE_3, "50000090", "11000001", "PA", 100, 100,
                    (Region(Anatomy.SPINE, Box(40, 0, 60, 100)),))
    write_scene_graph(sg, dicom.parent)
    arc = Archive(archive)
    assert arc.scene_graph(IMAGE_3) is None  # the id alone does not find it
    assert arc.scene_graph(IMAGE_3, dicom) == sg
    assert [p for p, _ in arc.iter_split("test")] == [dicom]


def test_regions_prefer_scene_graph_then_gold(archive):
    arc = Archive(archive)
    from_sg = arc.regions(IMAGE_1)
    assert len(from_sg) == 5 and Anatomy.SPINE in {r.anatomy for r in from_sg}
    from_gold = arc.regions(IMAGE_2)
    assert {r.anatomy for r in from_gold} == {Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG,
                                              Anatomy.CARDIAC_SILHOUETTE}
    assert arc.regions(IMAGE_3) is None
    assert set(arc.gold) == {IMAGE_1, IMAGE_2}


def test_no_gold_csv(tmp_path):
    assert Archive(tmp_path).gold == {}


def test_split_round_trip(archive):
    rows = Archive(archive).split("train")
    assert [r.dicom_id for r in rows] == [IMAGE_1, IMAGE_2]
    assert rows[0] == SplitRow(IMAGE_1, "10000099", "50000077", dicom_rel("10000099", "50000077", IMAGE_1))


def test_split_in_the_real_chest_imagenome_format(archive):
    # silver_dataset/splits/*.csv: an unnamed index column and a ViewPosition column
    rel = dicom_rel("10000099", "50000077", IMAGE_1)
    (archive / "splits" / "valid.csv").write_text(
        ",subject_id,study_id,dicom_id,path,ViewPosition\n"
        f"0,10000099,50000077,{IMAGE_1},{rel},PA\n")
    assert Archive(archive).split("valid") == [SplitRow(IMAGE_1, "10000099", "50000077", rel)]


def test_iter_split_yields_images_with_scene_graphs(archive):
    pairs = list(Archive(archive).iter_split("train"))
    assert len(pairs) == 1
    path, sg = pairs[0]
    assert path == archive / dicom_rel("10000099", "50000077", IMAGE_1) and sg.image_id == IMAGE_1


def test_split_errors(archive):
    arc = Archive(archive)
    with pytest.raises(AnnotationError, match="Unknown split 'dev'.*train, valid, test"):
        arc.split("dev")
    with pytest.raises(AnnotationError, match="no valid split"):
        arc.split("valid")
    (archive / "splits" / "valid.csv").write_text("dicom_id,path\nabc,files/abc.dcm\n")
    with pytest.raises(AnnotationError, match="lacks column.*subject_id.*study_id"):
        arc.split("valid")


def test_a_dangling_dcm_link_counts_as_dicom_to_be_reported(tmp_path):
    """A link named like a DICOM whose target is gone is listed (the ingest reports it failed);
    a dangling link without a DICOM name, or to a missing folder, is not."""
    (tmp_path / "gone.dcm").symlink_to(tmp_path / "nowhere" / "x.dcm")
    (tmp_path / "gone.DICOM").symlink_to(tmp_path / "nowhere" / "y.dcm")
    (tmp_path / "IM000009").symlink_to(tmp_path / "nowhere" / "IM000009")
    (tmp_path / "folder.dcm").mkdir()
    assert [p.name for p in Archive(tmp_path).dicom_paths()] == ["gone.DICOM", "gone.dcm"]
