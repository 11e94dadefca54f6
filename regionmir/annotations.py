"""Chest ImaGenome annotations: scene graph JSON and the gold bounding-box CSV, read and written.

Both the phantom archive and real Chest ImaGenome data go through these readers. Boxes are
kept in original DICOM pixels; boxes that are empty or outside the image are dropped and
reported in ``SceneGraph.dropped``.

In the real files ``original_width``/``original_height`` of an object (and of a gold CSV row)
are the size of the *box* in original pixels, not of the image: the image size is not in
Chest ImaGenome at all. RegionMIR writes it as the extra top-level keys ``image_width`` and
``image_height``; a real scene graph reads with ``width = height = 0`` (unknown), and its
boxes are then only checked for being empty, not clipped.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from regionmir.anatomy import Anatomy
from regionmir.errors import AnnotationError, UnknownAnatomyError
from regionmir.regions import Box, validate_box

log = logging.getLogger("regionmir")

SCALED_SIZE = 224  # the x1/y1/x2/y2 fields of a scene graph are on a 224x224 padded square
FINDING_CATEGORIES = ("anatomicalfinding", "disease", "tubesandlines", "technicalassessment")


@dataclass(frozen=True)
class Region:
    """One anatomical region of one image."""

    anatomy: Anatomy
    box: Box  # original pixels
    findings: tuple[str, ...] = ()  # labels marked "yes" (e.g. "lung opacity")
    phrases: tuple[str, ...] = ()  # report sentences about this region
    confidence: float | None = None  # set when the box was predicted by the localizer


@dataclass(frozen=True)
class SceneGraph:
    """The annotation of one image, as in a Chest ImaGenome ``*_SceneGraph.json``."""

    image_id: str  # the dicom_id (file stem)
    study_id: str
    patient_id: str  # the raw id: never put it in payloads or logs
    viewpoint: str
    width: int  # image size in original pixels; 0 when unknown (real Chest ImaGenome files)
    height: int
    regions: tuple[Region, ...]
    gender: str | None = None
    age_decile: str | None = None
    reason_for_exam: str | None = None
    dropped: tuple[str, ...] = field(default=(), compare=False)  # boxes removed, with reasons

    def region(self, anatomy: Anatomy | str) -> Region | None:
        """The region of ``anatomy`` in this image, or None."""
        anatomy = Anatomy.parse(anatomy)
        return next((r for r in self.regions if r.anatomy is anatomy), None)

    @property
    def findings(self) -> tuple[str, ...]:
        """All findings of the image, sorted, without repeats."""
        return tuple(sorted({f for r in self.regions for f in r.findings}))


# ----------------------------------------------------------------------------- writing


def _scaled(box: Box, width: int, height: int) -> Box:
    """Original pixels -> the 224x224 square the image is padded (centred) and resized to."""
    side = max(width, height)
    s = SCALED_SIZE / side
    ox, oy = (side - width) / 2, (side - height) / 2
    return Box((box.x1 + ox) * s, (box.y1 + oy) * s, (box.x2 + ox) * s, (box.y2 + oy) * s)


def scene_graph_to_dict(sg: SceneGraph) -> dict:
    """The Chest ImaGenome JSON structure for ``sg``."""
    objects, attributes = [], []
    for r in sg.regions:
        s = _scaled(r.box, sg.width, sg.height)
        name = r.anatomy.bbox_name
        object_id = f"{sg.image_id}_{name}"
        objects.append({
            "object_id": object_id, "bbox_name": name, "name": name.capitalize(),
            "synsets": [], "x1": round(s.x1), "y1": round(s.y1), "x2": round(s.x2),
            "y2": round(s.y2), "width": round(s.width), "height": round(s.height),
            "original_x1": round(r.box.x1), "original_y1": round(r.box.y1),
            "original_x2": round(r.box.x2), "original_y2": round(r.box.y2),
            "original_width": round(r.box.width), "original_height": round(r.box.height),
        })
        labels = [f"anatomicalfinding|yes|{f}" for f in r.findings]
        phrases = list(r.phrases)
        attributes.append({
            name: True, "bbox_name": name, "name": name.capitalize(), "object_id": object_id,
            "phrases": phrases, "attributes": [labels for _ in phrases] or [labels],
        })
    return {
        "image_id": sg.image_id, "viewpoint": sg.viewpoint, "patient_id": sg.patient_id,
        "study_id": sg.study_id, "gender": sg.gender, "age_decile": sg.age_decile,
        "reason_for_exam": sg.reason_for_exam, "objects": objects, "attributes": attributes,
        "relationships": [], "image_width": sg.width, "image_height": sg.height,
    }


def write_scene_graph(sg: SceneGraph, path: str | Path) -> Path:
    """Write ``sg`` as ``<dir>/<image_id>_SceneGraph.json`` (or to ``path`` if it is a file name)."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / f"{sg.image_id}_SceneGraph.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scene_graph_to_dict(sg), indent=1))
    return path


# ----------------------------------------------------------------------------- reading


def _entries(data: dict, key: str, source: str) -> list[dict]:
    """``data[key]`` (absent: empty) checked to be a list of at most MAX_ENTRIES JSON objects.

    A scene graph has one object per region (36 at most): a longer list is not one, and
    would cost time and memory for every entry.

    Raises:
        AnnotationError: not a list, too long, or holding something other than objects.
    """
    entries = data.get(key) or []
    if not isinstance(entries, list):
        raise AnnotationError(f"{source}: {key!r} must be a list of JSON objects, found {_kind(entries)}")
    if len(entries) > MAX_ENTRIES:
        raise AnnotationError(f"{source}: {key!r} has {len(entries)} entries; a scene graph has one per "
                              f"region (at most {MAX_ENTRIES} are read): is this the right file?")
    odd = next((e for e in entries if not isinstance(e, dict)), None)
    if odd is not None:
        raise AnnotationError(f"{source}: {key!r} must be a list of JSON objects, found {_kind(odd)} in it")
    return entries


def _kind(value) -> str:
    """A JSON value's type in words, for messages (never the value: it may be long)."""
    names = {str: "a string", bool: "true/false", int: "a number", float: "a number", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _list_field(entry: dict, key: str, source: str) -> list:
    """``entry[key]`` as a list (absent: empty).

    Raises:
        AnnotationError: it is something else.
    """
    value = entry.get(key) or []
    if not isinstance(value, list):
        raise AnnotationError(f"{source}: the {key!r} of {entry.get('bbox_name')!r} must be a list, "
                              f"found {_kind(value)}")
    return value


def _findings_of(entry: dict, source: str = "<dict>") -> tuple[set[str], list[str]]:
    """Findings marked "yes" and the phrases of one attributes entry."""
    found: set[str] = set()
    raw = _list_field(entry, "attributes", source)
    flat = [a for group in raw for a in (group if isinstance(group, list) else [group])]
    for label in flat:
        parts = str(label).split("|")
        if len(parts) == 3 and parts[1] == "yes" and parts[0] in FINDING_CATEGORIES:
            found.add(parts[2])
    return found, [str(p) for p in _list_field(entry, "phrases", source)]


def scene_graph_from_dict(data: dict, source: str = "<dict>") -> SceneGraph:
    """Parse the Chest ImaGenome JSON structure.

    Raises:
        AnnotationError: required fields are missing, or ``objects``/``attributes`` are not
            lists of JSON objects (or are far longer than a scene graph's).
    """
    if "image_id" not in data or "objects" not in data:
        missing = "image_id" if "image_id" not in data else "objects"
        raise AnnotationError(f"{source}: not a Chest ImaGenome scene graph (missing {missing!r})")
    image_id = str(data["image_id"])
    objects = _entries(data, "objects", source)
    notes = _notes_by_anatomy(_entries(data, "attributes", source), source)
    width, height = _image_size(data)
    regions, dropped = _regions(objects, notes, width, height)
    if dropped:
        log.warning("%s: dropped %d box(es): %s", source, len(dropped), "; ".join(dropped))
    return SceneGraph(
        image_id=image_id, study_id=str(data.get("study_id", "")),
        patient_id=str(data.get("patient_id", "")), viewpoint=str(data.get("viewpoint") or ""),
        width=width, height=height, regions=tuple(regions), gender=data.get("gender"),
        age_decile=data.get("age_decile"), reason_for_exam=data.get("reason_for_exam"),
        dropped=tuple(dropped),
    )


def _notes_by_anatomy(attributes: list[dict], source: str) -> dict[Anatomy, tuple[set[str], list[str]]]:
    """Findings and phrases of the ``attributes`` entries, merged per anatomy."""
    notes: dict[Anatomy, tuple[set[str], list[str]]] = {}
    for entry in attributes:
        try:
            anatomy = Anatomy.parse(entry.get("bbox_name", ""))
        except UnknownAnatomyError:
            continue
        found, phrases = _findings_of(entry, source)
        old = notes.get(anatomy, (set(), []))
        notes[anatomy] = (old[0] | found, old[1] + phrases)
    return notes


def _regions(objects: list[dict], notes: dict, width: int, height: int) -> tuple[list[Region], list[str]]:
    """``(regions, dropped)``: the usable boxes in file order, and reasons for the others."""
    regions: list[Region] = []
    dropped: list[str] = []
    for obj in objects:
        try:
            anatomy = Anatomy.parse(obj["bbox_name"])
            box = Box(*(float(obj[f"original_{k}"]) for k in ("x1", "y1", "x2", "y2")))
        except UnknownAnatomyError:
            dropped.append(f"{obj.get('bbox_name')!r}: unknown region")
            continue
        except (KeyError, TypeError, ValueError) as e:
            dropped.append(f"{obj.get('bbox_name')!r}: unreadable box ({e})")
            continue
        clipped, reason = validate_box(box, width or _UNBOUNDED, height or _UNBOUNDED)
        if clipped is None:
            dropped.append(f"{anatomy.bbox_name}: {reason}")
            continue
        found, phrases = notes.get(anatomy, (set(), []))
        regions.append(Region(anatomy, clipped, tuple(sorted(found)), tuple(phrases)))
    return regions, dropped


_UNBOUNDED = 10**9  # the "image size" used to validate boxes of an image of unknown size
MAX_ENTRIES = 1000  # objects/attributes read from one scene graph (Chest ImaGenome has 36 regions)
MAX_BYTES = 16 * 2**20  # a real scene graph, relationships and all, is well under 1 MB


def _image_size(data: dict) -> tuple[int, int]:
    """RegionMIR's ``image_width``/``image_height`` keys, or (0, 0) when absent (real files)."""
    try:
        width, height = int(data.get("image_width") or 0), int(data.get("image_height") or 0)
    except (TypeError, ValueError):
        return 0, 0
    return (width, height) if width > 0 and height > 0 else (0, 0)


def read_scene_graph(path: str | Path) -> SceneGraph:
    """Read one ``*_SceneGraph.json``.

    Raises:
        AnnotationError: the file is missing, not JSON, or not a scene graph.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise AnnotationError(f"Scene graph {path} is {size / 2**20:.0f} MB; scene graphs are far smaller "
                                  f"(at most {MAX_BYTES // 2**20} MB are read): is this the right file?")
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationError(f"Scene graph {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"Scene graph {path} is not valid JSON: {e}") from None
    except RecursionError:  # '[' * 100000: the parser gives up, as it should
        raise AnnotationError(f"Scene graph {path} nests lists or objects too deeply to be a scene graph") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"Scene graph {path} is not a JSON object")
    return scene_graph_from_dict(data, source=f"Scene graph {path}")


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?")


def read_gold_csv(
    path: str | Path, sizes: dict[str, tuple[int, int]] | None = None
) -> dict[str, list[Region]]:
    """Read ``gold_bbox_coordinate_annotations_1000images.csv``.

    Args:
        path: the CSV; needs columns ``image_id`` (with ``.dcm``), ``bbox_name`` and
            ``coord_original`` (``"[x1, y1, x2, y2]"``). Its ``original_width``/``original_height``
            are box sizes, not image sizes, and are not used.
        sizes: optional ``dicom_id -> (width, height)`` of the images, for clipping.

    Returns:
        ``dicom_id -> regions`` (the ``.dcm`` suffix removed). Bad rows are logged and dropped.

    Raises:
        AnnotationError: the file is missing or lacks the required columns.
    """
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(f"Gold CSV {path} does not exist") from None
    out: dict[str, list[Region]] = defaultdict(list)
    with handle:
        reader = csv.DictReader(handle)
        need = {"image_id", "bbox_name", "coord_original"}
        if not need <= set(reader.fieldnames or []):
            raise AnnotationError(
                f"{path}: gold CSV needs columns {sorted(need)}, found {reader.fieldnames}"
            )
        for n, row in enumerate(reader, start=2):
            region = _gold_row(row, sizes or {}, f"{path}:{n}")
            if region is not None:
                out[Path(row["image_id"].strip()).stem].append(region)
    return dict(out)


def _gold_row(row: dict, sizes: dict[str, tuple[int, int]], where: str) -> Region | None:
    if not (row.get("image_id") or "").strip():
        log.warning("%s: no image_id, row dropped", where)
        return None
    try:
        anatomy = Anatomy.parse(row["bbox_name"])
    except UnknownAnatomyError:
        log.warning("%s: unknown bbox_name %r, row dropped", where, row["bbox_name"])
        return None
    nums = [float(x) for x in _NUMBER.findall(row["coord_original"] or "")]
    if len(nums) != 4:
        log.warning("%s: coord_original %r is not 4 numbers, row dropped", where, row["coord_original"])
        return None
    stem = Path(row["image_id"].strip()).stem
    w, h = sizes.get(stem, (0, 0))
    box = Box(*nums)
    clipped, reason = validate_box(box, w or _UNBOUNDED, h or _UNBOUNDED)
    if clipped is None:
        log.warning("%s: %s %s, row dropped", where, anatomy.bbox_name, reason)
        return None
    return Region(anatomy, clipped)
