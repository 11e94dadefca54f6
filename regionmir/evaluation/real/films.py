"""A folder of real films with lung and heart truth: ``films.csv`` rows -> :class:`RealFilm`, mask -> lung boxes.

The folder holds ``films.csv`` with the columns ``file`` (image path relative to the folder),
``mask`` (a lung mask image of the same size, both lungs in one mask, or empty), ``right_lung``,
``left_lung`` and ``heart`` (boxes ``x1 y1 x2 y2`` in image pixels, or empty; the heart box is the
cardiac silhouette's), ``view`` (``PA``/``AP``/...), ``finding`` (one label per film, or empty),
``group`` (a pseudonymous patient key: films of one patient share it), ``split``
(``train``/``test``; any real film used for training must be ``train``), ``license``, ``source``
(the public set the film comes from) and ``ctr`` (the source's own cardiothoracic ratio, or
empty). Only ``file``, ``view``, ``finding`` and ``group`` are required, so older folders still
read. Lung truth boxes come from the mask when there is one, else from the box columns.

For training only, a folder without films.csv is read as a hospital's own unlabeled films
(:func:`training_films`): every DICOM (found by content), PNG and JPEG below it, no truth.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regionmir.errors import AnnotationError
from regionmir.regions import Box

COLUMNS = ("file", "mask", "right_lung", "left_lung", "heart", "view", "finding", "group", "split", "license",
           "source", "ctr")
BOX_COLUMNS = {"right-lung": "right_lung", "left-lung": "left_lung", "cardiac-silhouette": "heart"}  # slug -> column
HEART = "cardiac-silhouette"  # the slug of the heart's region: the Chest ImaGenome cardiac silhouette


@dataclass(frozen=True)
class RealFilm:
    """One real frontal film and what is known about its lungs and heart."""

    path: Path
    mask: Path | None
    boxes: dict[str, Box]  # "right-lung"/"left-lung"/"cardiac-silhouette" -> box, from the csv (mask boxes come later)
    view: str
    finding: str
    group: str  # pseudonymous patient key
    split: str
    license: str = ""
    source: str = "real"  # the public set it comes from ("real" where films.csv does not say)
    ctr: float | None = None  # the source's own cardiothoracic ratio, where it gives one


def _box(text: str) -> Box | None:
    parts = text.replace(",", " ").split()
    if not parts:
        return None
    if len(parts) != 4:
        raise AnnotationError(f"A box needs 4 numbers 'x1 y1 x2 y2'; got {text!r} in films.csv")
    return Box(*map(float, parts))


def read_films(folder: str | Path, split: str | None = None) -> list[RealFilm]:
    """The films of ``folder/films.csv`` (all, or those of ``split``).

    Raises:
        AnnotationError: no films.csv, or a column is missing; the message says what to do.
    """
    folder = Path(folder)
    table = folder / "films.csv"
    if not table.is_file():
        raise AnnotationError(f"{folder} has no films.csv. Make one with `python -m regionmir.evaluation.real.prep` "
                              "(see docs/results.md, 'Real films') or write it with the columns " + ", ".join(COLUMNS))
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in ("file", "view", "finding", "group") if rows and c not in rows[0]]
    if missing:
        raise AnnotationError(f"{table} lacks the column(s) {', '.join(missing)}")
    films = []
    for row in rows:
        boxes = {k: b for k, col in BOX_COLUMNS.items() if (b := _box(row.get(col) or "")) is not None}
        mask = row.get("mask") or ""
        ctr = (row.get("ctr") or "").strip()
        films.append(RealFilm(folder / row["file"], folder / mask if mask else None, boxes,
                              row["view"], row["finding"], row["group"], row.get("split") or "test",
                              row.get("license", ""), row.get("source") or "real", float(ctr) if ctr else None))
    return [f for f in films if split in (None, "all") or f.split == split]


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


def training_films(folder: str | Path) -> list[RealFilm]:
    """The films training may read: the ``train`` split of ``folder/films.csv``, or, where the
    folder has no films.csv, every film below it (DICOM by content, PNG/JPEG by name), unlabeled.

    Raises:
        AnnotationError: neither a films.csv nor any film in the folder.
    """
    from regionmir.archive import is_dicom_file

    folder = Path(folder)
    if (folder / "films.csv").is_file():
        return read_films(folder, "train")
    paths = sorted(p for p in folder.rglob("*") if not p.name.startswith(".") and p.is_file()
                   and (p.suffix.lower() in PICTURE_SUFFIXES or is_dicom_file(p)))
    if not paths:
        raise AnnotationError(f"{folder} has neither a films.csv nor any DICOM, PNG or JPEG film to train on.")
    return [RealFilm(p, None, {}, "", "", "", "train") for p in paths]


def lung_boxes_from_mask(mask: np.ndarray, min_fraction: float = 0.05) -> dict[str, Box] | None:
    """Right and left lung boxes from a mask holding both lungs.

    The two largest connected blobs are the lungs; the one on the image's left is the patient's
    RIGHT lung (PA and AP films are viewed as if facing the patient). When the lungs touch (one
    blob), the mask is cut at the emptiest column of its middle third.

    Args:
        mask: ``(H, W)`` bool.
        min_fraction: a blob smaller than this share of the mask is ignored.

    Returns:
        ``{"right-lung": Box, "left-lung": Box}`` in pixels, or None for an empty mask.
    """
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    total = int(mask.sum())
    if total == 0:
        return None
    lab, n = ndimage.label(mask)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    keep = [i + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] >= min_fraction * total]
    if len(keep) == 2:
        parts = [lab == i for i in keep]
    else:
        parts = _cut_at_gap(lab == keep[0] if keep else mask)
    parts.sort(key=lambda m: np.nonzero(m)[1].mean())  # image left first
    boxes = [_mask_box(m) for m in parts]
    return {"right-lung": boxes[0], "left-lung": boxes[1]}


def _cut_at_gap(mask: np.ndarray) -> list[np.ndarray]:
    """One blob -> two halves split at the column of least mask in the blob's middle third."""
    xs = np.nonzero(mask.any(axis=0))[0]
    x0, x1 = xs[0], xs[-1] + 1
    third = max(1, (x1 - x0) // 3)
    cols = mask[:, x0 + third : x1 - third].sum(axis=0)
    cut = x0 + third + int(np.argmin(cols)) if cols.size else (x0 + x1) // 2
    left, right = mask.copy(), mask.copy()
    left[:, cut:] = False
    right[:, :cut] = False
    return [left, right]


def _mask_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A lung mask image as ``(H, W)`` bool at ``shape`` (nearest-neighbour resize if needed)."""
    from PIL import Image

    im = Image.open(path).convert("L")
    if im.size != (shape[1], shape[0]):
        im = im.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(im) >= 64


def truth_boxes(film: RealFilm, shape: tuple[int, int]) -> dict[str, Box]:
    """The film's true boxes: lungs from its mask when it has one, else from films.csv; the
    heart (``cardiac-silhouette``) from films.csv."""
    boxes = dict(film.boxes)
    if film.mask is not None and film.mask.is_file():
        boxes.update(lung_boxes_from_mask(read_mask(film.mask, shape)) or {})
    return boxes
