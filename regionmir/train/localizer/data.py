"""Localizer training data: frontal films of an archive split with their 29 boxes, and batches.

Each film is decoded once and kept in memory downsampled (area average) to ``2 * size`` on its
longer side, with its boxes scaled the same way; every epoch draws fresh augmentations from it
(:mod:`regionmir.train.localizer.augment`). Regions a scene graph lacks are masked out of the
loss, never guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from regionmir.anatomy import BOXED
from regionmir.annotations import SceneGraph
from regionmir.archive import Archive
from regionmir.errors import AnnotationError, ImageReadError
from regionmir.train.localizer.augment import AugmentConfig, augment

log = logging.getLogger("regionmir")

FRONTAL = ("PA", "AP", "")  # viewpoints the localizer learns from ("" = not recorded)


@dataclass(frozen=True)
class Film:
    """One training film, downsampled; boxes in the downsampled pixels."""

    image_id: str
    pixels: np.ndarray  # (h, w) float32 [0, 1], bright = dense
    boxes: np.ndarray  # (29, 4) x1, y1, x2, y2; zeros where absent
    present: np.ndarray  # (29,) bool: the scene graph has this region


def region_arrays(sg: SceneGraph, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(29, 4)`` boxes (times ``scale``) and ``(29,)`` presence of a scene graph, BOXED order."""
    boxes = np.zeros((len(BOXED), 4), np.float32)
    present = np.zeros(len(BOXED), bool)
    for i, anatomy in enumerate(BOXED):
        r = sg.region(anatomy)
        if r is not None:
            boxes[i] = np.array([r.box.x1, r.box.y1, r.box.x2, r.box.y2]) * scale
            present[i] = True
    return boxes, present


def make_film(image_id: str, pixels: np.ndarray, sg: SceneGraph, size: int) -> Film:
    """Downsample ``pixels`` to ``2 * size`` on the longer side and scale the boxes with it."""
    h, w = pixels.shape
    scale = min(1.0, 2 * size / max(h, w))
    if scale < 1.0:
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        pixels = np.asarray(Image.fromarray(pixels.astype(np.float32)).resize(
            (nw, nh), Image.Resampling.BOX), dtype=np.float32)
    sx = pixels.shape[1] / (sg.width or w)
    boxes, present = region_arrays(sg, sx)
    return Film(image_id, np.clip(pixels, 0, 1), boxes, present)


def load_films(archive: Archive, split: str, size: int, limit: int | None = None) -> list[Film]:
    """Decode the frontal films of ``split`` that have scene graphs.

    Raises:
        AnnotationError: the split has no usable film.
    """
    from regionmir.dicom import read_image

    films = []
    for path, sg in archive.iter_split(split):
        if sg.viewpoint.upper() not in FRONTAL:
            continue
        try:
            pixels = read_image(path).pixels
        except ImageReadError as e:
            log.warning("skipping %s: %s", sg.image_id, e.reason)
            continue
        films.append(make_film(sg.image_id, pixels, sg, size))
        if limit and len(films) >= limit:
            break
    if not films:
        raise AnnotationError(
            f"The {split} split of {archive.root} has no frontal film with a scene graph; "
            "the localizer needs Chest ImaGenome boxes (try `regionmir phantom OUT`)."
        )
    return films


def template(films: list[Film], size: int) -> np.ndarray:
    """Mean normalized letterbox box of every region: the prior the network starts from."""
    from regionmir.inference.localizer import Letterbox

    acc = np.zeros((len(BOXED), 4))
    n = np.zeros(len(BOXED))
    for f in films:
        geo = Letterbox.of(f.pixels.shape[1], f.pixels.shape[0], size)
        acc[f.present] += geo.from_original(f.boxes[f.present])
        n += f.present
    default = np.array([0.25, 0.25, 0.75, 0.75])
    return np.where(n[:, None] > 0, acc / np.maximum(n, 1)[:, None], default).astype(np.float32)


def batches(films: list[Film], size: int, batch_size: int, cfg: AugmentConfig,
            rng: np.random.Generator):
    """One epoch of shuffled, augmented batches ``(x (B,1,S,S) [0,1], boxes (B,29,4), mask (B,29))``."""
    order = rng.permutation(len(films))
    for start in range(0, len(order), batch_size):
        xs, bs, ms = [], [], []
        for i in order[start : start + batch_size]:
            f = films[i]
            canvas, target, ok = augment(f.pixels, np.where(f.present[:, None], f.boxes, 0), size, cfg, rng)
            xs.append(canvas)
            bs.append(target)
            ms.append(ok & f.present)
        yield (torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(bs)),
               torch.from_numpy(np.stack(ms)))

