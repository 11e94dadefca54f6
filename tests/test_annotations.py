"""regionmir.annotations: scene graph JSON and the gold CSV, in the real Chest ImaGenome formats."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from regionmir.anatomy import Anatomy
from regionmir.annotations import (
    MAX_BYTES,
    MAX_ENTRIES,
    Region,
    SceneGraph,
    read_gold_csv,
    read_scene_graph,
    scene_graph_from_dict,
    scene_graph_to_dict,
    write_scene_graph,
)
from regionmir.errors import AnnotationError
from regionmir.regions import Box

DATA = Path(__file__).parent / "data"
REAL_SG = DATA / "scene_graph_excerpt.json"  # hand-written in the real format
GOLD = DATA / "gold_bbox_excerpt.csv"  # hand-written in the real format
IMAGE_1 = "d0e1f2a3-5b6c7d8e-9f0a1b2c-3d4e5f60-71829304"
IMAGE_2 = "9a8b7c6d-0e1f2a3b-4c5d6e7f-8a9b0c1d-2e3f4a5b"


def example() -> SceneGraph:
    return SceneGraph(
        image_id="img-1", study_id="s50000001", patient_id="10000001", viewpoint="AP",
        width=2000, height=2500,
        regions=(
            Region(Anatomy.RIGHT_LUNG, Box(300, 400, 950, 1900), ("lung opacity", "pneumonia"),
                   ("Right basilar opacity.", "Possible pneumonia on the right.")),
            Region(Anatomy.LEFT_LUNG, Box(1050, 380, 1700, 1950), (), ("The left lung is clear.",)),
            Region(Anatomy.TRACHEA, Box(940, 0, 1060, 700)),
        ),
        gender="M", age_decile="50-60", reason_for_exam="cough",
    )


# ----------------------------------------------------------------------------- scene graphs


def test_write_read_round_trip(tmp_path):
    sg = example()
    path = write_scene_graph(sg, tmp_path / "scene_graph")
    assert path == tmp_path / "scene_graph" / "img-1_SceneGraph.json"
    back = read_scene_graph(path)
    assert back == sg
    assert back.dropped == ()
    assert back.region("right-lung").findings == ("lung opacity", "pneumonia")
    assert back.region(Anatomy.TRACHEA).phrases == ()
    assert back.findings == ("lung opacity", "pneumonia")
    assert back.region("left clavicle") is None


def test_write_to_explicit_file_name(tmp_path):
    path = write_scene_graph(example(), tmp_path / "x.json")
    assert path == tmp_path / "x.json" and read_scene_graph(path) == example()


def test_written_file_is_in_the_real_format():
    data = scene_graph_to_dict(example())
    obj = next(o for o in data["objects"] if o["bbox_name"] == "right lung")
    # original_width/height are the box size, as in Chest ImaGenome
    assert (obj["original_x1"], obj["original_y1"], obj["original_x2"], obj["original_y2"]) == (300, 400, 950, 1900)
    assert (obj["original_width"], obj["original_height"]) == (650, 1500)
    # x1..y2 are on the 224 square the image is padded (centred) to: side 2500, x offset 250
    assert obj["x1"] == round((300 + 250) * 224 / 2500) and obj["y2"] == round(1900 * 224 / 2500)
    assert obj["object_id"] == "img-1_right lung"
    attrs = next(a for a in data["attributes"] if a["bbox_name"] == "right lung")
    assert all(isinstance(group, list) for group in attrs["attributes"])
    assert "anatomicalfinding|yes|lung opacity" in attrs["attributes"][0]
    assert len(attrs["attributes"]) == len(attrs["phrases"]) == 2


def test_real_format_excerpt_parses(caplog):
    with caplog.at_level(logging.WARNING, logger="regionmir"):
        sg = read_scene_graph(REAL_SG)
    assert (sg.image_id, sg.study_id, sg.patient_id, sg.viewpoint) == (IMAGE_1, "50000077", "10000099", "PA")
    assert (sg.width, sg.height) == (0, 0)  # the real format does not say the image size
    assert (sg.gender, sg.age_decile) == ("F", "60-70")
    assert [r.anatomy for r in sg.regions] == [
        Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG, Anatomy.RIGHT_LOWER_LUNG_ZONE,
        Anatomy.CARDIAC_SILHOUETTE, Anatomy.SPINE,
    ]
    right = sg.region(Anatomy.RIGHT_LUNG)
    assert right.box == Box(560, 380, 1520, 2450)
    assert right.findings == ("lung opacity", "pneumonia")  # "no" and "nlp" labels left out
    assert right.phrases == ("Patchy opacity in the right lung base may reflect pneumonia.",
                             "No pleural effusion on the right.")
    # original_width (950) is the box width: a box starting right of it is kept, unclipped
    assert sg.region(Anatomy.LEFT_LUNG).box == Box(1640, 360, 2590, 2530)
    assert sg.region(Anatomy.CARDIAC_SILHOUETTE).findings == ()
    assert sg.region(Anatomy.CARDIAC_SILHOUETTE).phrases == ("Heart size is normal.",)
    assert sg.region(Anatomy.SPINE).box == Box(1390, 0, 1680, 3056)
    assert sg.findings == ("lung opacity", "pneumonia")
    assert sg.dropped == ("svc: zero-area box",)
    assert "dropped 1 box(es): svc: zero-area box" in caplog.text


def test_boxes_outside_a_known_image_are_dropped_and_reported(caplog):
    data = scene_graph_to_dict(example())
    data["objects"][0].update(original_x1=2100, original_x2=2400)  # right lung: off the image
    data["objects"][1].update(original_x2=2300)  # left lung: partly off, clipped at 2000
    data["objects"][2].update(original_y2=0)  # trachea: zero height
    data["objects"].append(dict(data["objects"][2], bbox_name="left kidney"))
    with caplog.at_level(logging.WARNING, logger="regionmir"):
        sg = scene_graph_from_dict(data, source="test.json")
    assert [r.anatomy for r in sg.regions] == [Anatomy.LEFT_LUNG]
    assert sg.region("left lung").box == Box(1050, 380, 2000, 1950)
    assert len(sg.dropped) == 3
    assert "right lung: box [2100.0, 400.0, 2400.0, 1900.0] lies outside the 2000x2500 image" in sg.dropped
    assert "trachea: zero-area box" in sg.dropped
    assert "'left kidney': unknown region" in sg.dropped
    assert "test.json: dropped 3 box(es)" in caplog.text


def test_unreadable_box_is_dropped():
    data = scene_graph_to_dict(example())
    del data["objects"][0]["original_y2"]
    sg = scene_graph_from_dict(data)
    assert len(sg.regions) == 2 and "unreadable box" in sg.dropped[0]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"image_id": "x"}', "not a Chest ImaGenome scene graph.*objects"),
])
def test_bad_scene_graph_files(tmp_path, content, message):
    path = tmp_path / "bad_SceneGraph.json"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_scene_graph(path)


@pytest.mark.parametrize("content, message", [
    ('{"image_id": "x", "objects": "notalist"}', "'objects' must be a list of JSON objects, found a string$"),
    ('{"image_id": "x", "objects": ["x", 5]}', "'objects' must be a list of JSON objects, found a string in it"),
    ('{"image_id": "x", "objects": [], "attributes": 5}', "'attributes' must be a list .*found a number$"),
    ('{"image_id": "x", "objects": [], "attributes": ["s"]}', "'attributes' must be a list .*a string in it"),
    ('{"image_id": "x", "objects": [], "attributes": [{"bbox_name": "left lung", "attributes": 5}]}',
     "the 'attributes' of 'left lung' must be a list, found a number"),
    ('{"image_id": "x", "objects": [], "attributes": [{"bbox_name": "left lung", "phrases": 5}]}',
     "the 'phrases' of 'left lung' must be a list"),
    ("[" * 100_000 + "]" * 100_000, "nests lists or objects too deeply"),
])
def test_scene_graph_of_the_wrong_shape_is_named(tmp_path, content, message):
    """Each of these once ended in an AttributeError, TypeError or RecursionError traceback."""
    path = tmp_path / "odd_SceneGraph.json"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=f"^Scene graph {path}.*{message}"):
        read_scene_graph(path)


def test_scene_graph_with_thousands_of_objects_is_refused(tmp_path):
    """20,000 copies of one object once took 14 s and 768 MB, and listed 20,000 query regions."""
    data = scene_graph_to_dict(example())
    data["objects"] = data["objects"][:1] * (MAX_ENTRIES + 1)
    path = tmp_path / "many_SceneGraph.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=f"'objects' has {MAX_ENTRIES + 1} entries.*right file"):
        read_scene_graph(path)


def test_scene_graph_larger_than_any_real_one_is_not_read(tmp_path):
    path = tmp_path / "huge_SceneGraph.json"
    with path.open("w") as handle:
        handle.write('{"image_id": "x", "objects": [], "pad": "')
        handle.write("x" * MAX_BYTES)
        handle.write('"}')
    with pytest.raises(AnnotationError, match="huge_SceneGraph.json is 16 MB.*at most 16 MB"):
        read_scene_graph(path)


def test_missing_scene_graph(tmp_path):
    with pytest.raises(AnnotationError, match="does not exist"):
        read_scene_graph(tmp_path / "nope_SceneGraph.json")


# ----------------------------------------------------------------------------- gold CSV


def test_gold_csv_excerpt(caplog):
    with caplog.at_level(logging.WARNING, logger="regionmir"):
        gold = read_gold_csv(GOLD)
    assert set(gold) == {IMAGE_1, IMAGE_2}  # ".dcm" removed
    first = {r.anatomy: r.box for r in gold[IMAGE_1]}
    assert set(first) == {Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG, Anatomy.CARDIAC_SILHOUETTE,
                          Anatomy.TRACHEA, Anatomy.RIGHT_COSTOPHRENIC_ANGLE}
    assert first[Anatomy.RIGHT_LUNG] == Box(560, 380, 1520, 2450)  # coord_original is x1,y1,x2,y2
    assert first[Anatomy.LEFT_LUNG] == Box(1640, 360, 2590, 2530)  # not clipped by original_width
    assert {r.anatomy for r in gold[IMAGE_2]} == {
        Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG, Anatomy.CARDIAC_SILHOUETTE}
    assert all(r.anatomy is not Anatomy.MEDIASTINUM for rs in gold.values() for r in rs)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3
    assert any(":7: right hilar structures zero-area box" in w for w in warnings)
    assert any(":8: unknown bbox_name 'left kidney'" in w for w in warnings)
    assert any(":12: coord_original '[1500, 300]' is not 4 numbers" in w for w in warnings)


def test_gold_csv_clips_to_known_image_sizes():
    gold = read_gold_csv(GOLD, sizes={IMAGE_1: (2000, 2400)})
    boxes = {r.anatomy: r.box for r in gold[IMAGE_1]}
    assert boxes[Anatomy.LEFT_LUNG] == Box(1640, 360, 2000, 2400)
    assert boxes[Anatomy.RIGHT_LUNG] == Box(560, 380, 1520, 2400)


def test_gold_csv_with_byte_order_mark_and_minimal_columns(tmp_path):
    path = tmp_path / "gold.csv"
    path.write_text("\ufeffimage_id,bbox_name,coord_original\nabc.dcm,left lung,\"[1, 2, 30, 40]\"\n",
                    encoding="utf-8")
    assert read_gold_csv(path) == {"abc": [Region(Anatomy.LEFT_LUNG, Box(1, 2, 30, 40))]}


def test_gold_csv_missing_columns(tmp_path):
    path = tmp_path / "gold.csv"
    path.write_text("image_id,bbox_name,x1,y1,x2,y2\nabc.dcm,left lung,1,2,3,4\n")
    with pytest.raises(AnnotationError, match=r"needs columns.*coord_original"):
        read_gold_csv(path)


def test_gold_csv_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="does not exist"):
        read_gold_csv(tmp_path / "gold.csv")


def test_gold_csv_row_without_image_id_is_dropped(tmp_path, caplog):
    path = tmp_path / "gold.csv"
    path.write_text('image_id,bbox_name,coord_original\n,left lung,"[1, 2, 30, 40]"\n')
    with caplog.at_level(logging.WARNING, logger="regionmir"):
        assert read_gold_csv(path) == {}
    assert "no image_id" in caplog.text


def test_written_json_is_plain_json(tmp_path):
    path = write_scene_graph(example(), tmp_path)
    data = json.loads(path.read_text())
    assert {"image_id", "viewpoint", "patient_id", "study_id", "objects", "attributes",
            "relationships"} <= set(data)
