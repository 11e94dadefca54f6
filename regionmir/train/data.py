"""Region crop datasets from an archive split, cut once with ``regions.crop_regions`` and held in memory.

Each region gets ``1 + jitter_views`` crops: view 0 is exactly the crop inference makes
(``crop_regions(image, boxes, spec)``); the others use a randomly jittered :class:`Box`
(shifted and rescaled before cropping, never mirrored). Training draws a view per sample
and then applies the tensor augmentations of :mod:`regionmir.train.augment`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from regionmir.anatomy import Anatomy
from regionmir.annotations import SceneGraph, scene_graph_to_dict
from regionmir.archive import Archive
from regionmir.errors import AnnotationError
from regionmir.regions import Box, CropSpec, crop_regions

log = logging.getLogger("regionmir")

Sample = tuple[np.ndarray, SceneGraph]  # (pixels (H, W) float32 [0, 1], scene graph)


@dataclass
class CropSet:
    """All region crops of one split."""

    views: np.ndarray  # (N, V, S, S) in [0, 1] (float16 for training sets); view 0 = the inference crop
    labels: np.ndarray  # (N,) int64: position of the region's anatomy in `classes`
    classes: tuple[Anatomy, ...]  # logit order
    image_ids: list[str]  # (N,) dicom_id of each crop

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def clean(self) -> np.ndarray:
        """``(N, S, S)`` float32 crops exactly as inference makes them."""
        return self.clean_rows()

    def clean_rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``(n, S, S)`` float32 view-0 crops of rows ``start:stop``."""
        return self.views[start:stop, 0].astype(np.float32)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` as ``(len(idx), V, S, S)`` (the interface a disk cache shares)."""
        return self.views[idx]


def jitter_box(box: Box, rng: np.random.Generator, amount: float = 0.08) -> Box:
    """``box`` with its centre shifted by up to ``amount`` of each side and each side rescaled
    by a factor in ``[exp(-amount), exp(amount)]``. Orientation is kept (no mirroring)."""
    cx, cy = box.center
    cx += rng.uniform(-amount, amount) * box.width
    cy += rng.uniform(-amount, amount) * box.height
    hw = box.width * math.exp(rng.uniform(-amount, amount)) / 2
    hh = box.height * math.exp(rng.uniform(-amount, amount)) / 2
    return Box(cx - hw, cy - hh, cx + hw, cy + hh)


def boxes_in_pixels(sg: SceneGraph, shape: tuple[int, int]) -> list[tuple[Anatomy, Box]]:
    """The regions of ``sg`` as boxes in pixels of an image of ``shape`` (H, W).

    Scene graph boxes are in original pixels; if the decoded image has another size (a
    downsampled copy), boxes are scaled to it.
    """
    h, w = shape
    sx = w / sg.width if sg.width else 1.0
    sy = h / sg.height if sg.height else 1.0
    if (sx, sy) == (1.0, 1.0):
        return [(r.anatomy, r.box) for r in sg.regions]
    log.debug("%s: image is %dx%d, scene graph %dx%d: scaling boxes", sg.image_id, w, h, sg.width, sg.height)
    return [(r.anatomy, r.box.scale(sx, sy)) for r in sg.regions]


def present_classes(graphs: Iterable[SceneGraph]) -> tuple[Anatomy, ...]:
    """Anatomies that occur in ``graphs``, in :class:`Anatomy` index order."""
    found = {r.anatomy for sg in graphs for r in sg.regions}
    return tuple(a for a in Anatomy if a in found)


def image_views(pixels: np.ndarray, sg: SceneGraph, classes, spec: CropSpec, jitter_views: int,
                jitter: float, seed) -> np.ndarray:
    """``(R, 1 + jitter_views, S, S)`` float32 crops of the regions of ``sg`` whose anatomy is in
    ``classes``, in scene-graph order: view 0 the inference crop, then jittered boxes drawn from
    ``np.random.default_rng(seed)`` (one generator per image, so any image can be cut alone)."""
    rng = np.random.default_rng(seed)
    kept = [box for a, box in boxes_in_pixels(sg, pixels.shape) if a in classes]
    boxes = [b for box in kept for b in [box] + [jitter_box(box, rng, jitter) for _ in range(jitter_views)]]
    if not kept:
        return np.zeros((0, 1 + jitter_views, spec.size, spec.size), np.float32)
    # one crop_regions call per image: its pyramid serves every box and view
    return crop_regions(pixels, boxes, spec).reshape(len(kept), 1 + jitter_views, spec.size, spec.size)


def build_cropset(samples: Iterable[Sample], classes: Sequence[Anatomy], spec: CropSpec,
                  jitter_views: int = 3, jitter: float = 0.08, seed: int = 0,
                  on_image: Callable[[int], None] | None = None, dtype=np.float16) -> CropSet:
    """Cut every region of every sample; regions whose anatomy is not in ``classes`` are skipped.

    ``on_image(n)`` is called after each image with the number of regions it gave. Crops are
    stored as ``dtype``: float16 halves the memory of a training set (rounding < 5e-4);
    held-out sets use float32 so they are exactly what inference sees.

    Raises:
        AnnotationError: no region crops at all.
    """
    index = {a: i for i, a in enumerate(classes)}
    views, labels, ids = [], [], []
    for number, (pixels, sg) in enumerate(samples):
        crops = image_views(pixels, sg, index, spec, jitter_views, jitter, (seed, number))
        views.extend(crops.astype(dtype))
        labels.extend(index[r.anatomy] for r in sg.regions if r.anatomy in index)
        ids.extend(sg.image_id for _ in crops)
        if on_image:
            on_image(len(crops))
    if not views:
        raise AnnotationError("No labeled regions found: the split has no scene-graph boxes to train on.")
    return CropSet(np.stack(views), np.asarray(labels, np.int64), tuple(classes), ids)


def read_pixels(pairs: Sequence[tuple]) -> Iterator[Sample]:
    """Decode the images of ``(dicom_path, scene_graph)`` pairs lazily, one at a time."""
    from regionmir.dicom import read_image

    for path, sg in pairs:
        yield read_image(path).pixels, sg


def eval_split(archive: Archive) -> str:
    """The held-out split to evaluate on: ``test`` when it has images, else ``valid``.

    Raises:
        AnnotationError: neither split exists or has scene graphs.
    """
    for name in ("test", "valid"):
        try:
            if next(archive.iter_split(name), None) is not None:
                return name
        except AnnotationError:
            continue
    raise AnnotationError(
        f"Archive {archive.root} has no test or valid split with scene graphs to evaluate on."
    )


class FingerprintSum:
    """An order-free hash of scene graphs, fed one at a time in constant memory.

    Each graph's SHA-256 (its dicom id and full contents) is added modulo 2**256, so the result
    does not depend on the order and the graphs need not be held (as :func:`fingerprint` once
    did, sorting all of them).
    """

    def __init__(self):
        self.total, self.count = 0, 0

    def add(self, sg: SceneGraph) -> None:
        text = sg.image_id + "\n" + json.dumps(scene_graph_to_dict(sg), sort_keys=True)
        self.total = (self.total + int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")) % 2**256
        self.count += 1

    def hexdigest(self) -> str:
        """16 hex digits of the graphs added so far."""
        return hashlib.sha256(f"{self.count}:{self.total:064x}".encode()).hexdigest()[:16]


def fingerprint(graphs: Iterable[SceneGraph]) -> str:
    """Hash of a split: its dicom ids and full scene-graph contents, order-independent (16 hex)."""
    digest = FingerprintSum()
    for sg in graphs:
        digest.add(sg)
    return digest.hexdigest()
