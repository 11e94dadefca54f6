"""An archive on disk in the MIMIC-CXR + Chest ImaGenome layout.

    ARCHIVE/files/p1X/p1XXXXXXX/sXXXXXXXX/<dicom_id>.dcm
    ARCHIVE/scene_graph/<dicom_id>_SceneGraph.json
    ARCHIVE/splits/{train,valid,test}.csv     (dicom_id, subject_id, study_id, path)
    ARCHIVE/gold_bbox_coordinate_annotations_1000images.csv   (optional)

Scene graphs may also sit beside the DICOMs, and an archive may be a bare folder of DICOMs.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from regionmir.annotations import Region, SceneGraph, read_gold_csv, read_scene_graph
from regionmir.errors import AnnotationError

SPLITS = ("train", "valid", "test")
SPLIT_COLUMNS = ("dicom_id", "subject_id", "study_id", "path")
GOLD_CSV = "gold_bbox_coordinate_annotations_1000images.csv"


@dataclass(frozen=True)
class SplitRow:
    """One image of a split file."""

    dicom_id: str
    subject_id: str
    study_id: str
    path: str  # relative to the archive root


class Archive:
    """Read access to an archive folder; nothing is loaded until asked for."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise AnnotationError(
                f"Archive {self.root} is not a folder. Create a phantom archive with "
                f"`regionmir phantom {self.root}` or point to a MIMIC-CXR style folder."
            )

    def dicom_paths(self) -> list[Path]:
        """Every DICOM file under the archive, sorted (stable order for sharding and resume).

        Found by content, not by name: ``*.dcm`` in any case, and files without a DICOM suffix
        (``IM000123``, ``1.2.840...``, the files of DICOMDIR media) whose 128-byte preamble is
        followed by ``DICM``. ``DICOMDIR`` itself (the media's index) and hidden files are left out.
        """
        base = self.root / "files" if (self.root / "files").is_dir() else self.root
        return sorted(p for p in base.rglob("*") if is_dicom_file(p))

    def relative(self, path: Path) -> str:
        """``path`` (a file found under the root) relative to the root, with forward slashes.

        Where the file lies in the archive, not where a symbolic link to it points: an archive
        assembled from links to files elsewhere is read through them, and named by its own tree.
        """
        return Path(os.path.relpath(Path(path).absolute(), self.root.absolute())).as_posix()

    def scene_graph_path(self, dicom_id: str, dicom_path: Path | None = None) -> Path | None:
        """Where the scene graph of ``dicom_id`` is (also beside ``dicom_path``), or None."""
        name = f"{dicom_id}_SceneGraph.json"
        folders = [self.root / "scene_graph", self.root / "scene_graphs", self.root]
        if dicom_path is not None:
            folders.append(Path(dicom_path).parent)
        for folder in folders:
            if (folder / name).is_file():
                return folder / name
        return None

    def scene_graph(self, dicom_id: str, dicom_path: Path | None = None) -> SceneGraph | None:
        """The parsed scene graph of ``dicom_id``, or None when there is none."""
        path = self.scene_graph_path(dicom_id, dicom_path)
        return read_scene_graph(path) if path else None

    @cached_property
    def gold(self) -> dict[str, list[Region]]:
        """Gold-standard boxes by dicom_id (empty when the archive has no gold CSV)."""
        path = self.root / GOLD_CSV
        return read_gold_csv(path) if path.is_file() else {}

    def regions(self, dicom_id: str) -> tuple[Region, ...] | None:
        """Labeled regions of an image: its scene graph, else the gold CSV, else None."""
        sg = self.scene_graph(dicom_id)
        if sg is not None:
            return sg.regions
        gold = self.gold.get(dicom_id)
        return tuple(gold) if gold else None

    def split(self, name: str) -> list[SplitRow]:
        """Rows of ``splits/<name>.csv``.

        Raises:
            AnnotationError: unknown split name or missing file.
        """
        if name not in SPLITS:
            raise AnnotationError(f"Unknown split {name!r}; use one of {', '.join(SPLITS)}")
        path = self.root / "splits" / f"{name}.csv"
        if not path.is_file():
            raise AnnotationError(f"{path} does not exist: this archive has no {name} split")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in SPLIT_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise AnnotationError(
                    f"{path} lacks column(s) {', '.join(missing)}; a split file needs "
                    f"{', '.join(SPLIT_COLUMNS)}"
                )
            return [SplitRow(**{k: r[k] or "" for k in SPLIT_COLUMNS}) for r in reader]

    def iter_split(self, name: str) -> Iterator[tuple[Path, SceneGraph]]:
        """``(dicom_path, scene_graph)`` for each image of a split that has a scene graph."""
        for row in self.split(name):
            sg = self.scene_graph(row.dicom_id, self.root / row.path)
            if sg is not None:
                yield self.root / row.path, sg


# Suffixes of files that sit beside DICOMs and are never DICOM: not opened while scanning.
NOT_DICOM_SUFFIXES = frozenset({
    ".json", ".csv", ".txt", ".md", ".jsonl", ".png", ".jpg", ".jpeg", ".html", ".xml", ".pdf",
    ".zip", ".gz", ".npz", ".npy", ".onnx", ".py", ".done", ".lock", ".tmp",
})


def image_id_of(path: str | Path) -> str:
    """The image id of a file: the MIMIC-CXR ``dicom_id`` (the name less ``.dcm``), else the name.

    ``1.2.840.10008.1234`` keeps its dots: only a DICOM suffix is taken off.
    """
    path = Path(path)
    return path.stem if path.suffix.lower() in (".dcm", ".dicom") else path.name


def is_dicom_file(path: Path) -> bool:
    """True for a regular file named ``*.dcm``/``*.dicom`` (any case) or holding the DICOM preamble.

    A file that cannot be opened counts as DICOM when its name says so (the ingest reports it),
    and as not DICOM otherwise. A symbolic link whose target is missing is such a file: named
    ``*.dcm``, it is reported, not silently passed over.
    """
    name = path.name
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    suffix = path.suffix.lower()
    if not path.is_file():
        return suffix in (".dcm", ".dicom") and dangling_link(path)
    if suffix in (".dcm", ".dicom"):
        return True
    if suffix in NOT_DICOM_SUFFIXES:
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dangling_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link to nothing (a target moved or deleted)."""
    return path.is_symlink() and not path.exists()


def write_split(root: str | Path, name: str, rows: list[SplitRow]) -> Path:
    """Write ``splits/<name>.csv`` with the standard columns."""
    path = Path(root) / "splits" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SPLIT_COLUMNS)
        for r in rows:
            writer.writerow([r.dicom_id, r.subject_id, r.study_id, r.path])
    return path


def resolve_path(root: str | Path, rel: str) -> Path | None:
    """The file a (possibly masked) payload path names under ``root``, or None."""
    root = Path(root)
    if "*" not in rel:
        return root / rel if (root / rel).is_file() else None
    return next(iter(sorted(root.glob(rel))), None)


def study_from_path(rel: str) -> str | None:
    """The MIMIC-CXR study id from ``files/p1X/p1XXXXXXX/sNNNNNNNN/<dicom_id>.dcm``."""
    parent = Path(rel).parent.name
    return parent[1:] if parent[:1] == "s" and parent[1:].isdigit() else None
