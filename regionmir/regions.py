"""Boxes and crops: the one definition of how a region becomes encoder input.

Training (``regionmir.train``) and inference (``regionmir.inference.encoder``, the ingest) both call
:func:`crop_regions` (or :func:`crop_region`, the same for one box) and :func:`normalize`, so
a crop seen at search time is made exactly as the crops the encoder learned from. Crops are never mirrored: laterality is the label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the original image, ``x2 > x1`` and ``y2 > y1``."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def as_list(self) -> list[float]:
        """``[x1, y1, x2, y2]`` rounded to 0.1 px, as stored in payloads and JSON."""
        return [round(v, 1) for v in (self.x1, self.y1, self.x2, self.y2)]

    def clip(self, width: int, height: int) -> Box:
        """This box cut to the image ``[0, width] x [0, height]`` (may become empty)."""
        return Box(
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
            min(max(self.x2, 0.0), width),
            min(max(self.y2, 0.0), height),
        )

    def scale(self, sx: float, sy: float | None = None) -> Box:
        """This box with x multiplied by ``sx`` and y by ``sy`` (default ``sx``)."""
        sy = sx if sy is None else sy
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when either is empty)."""
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    @classmethod
    def parse(cls, text: str) -> Box:
        """Parse ``"x1,y1,x2,y2"`` (brackets and spaces allowed).

        Raises:
            ValueError: not four finite numbers, or ``x2 <= x1`` / ``y2 <= y1``.
        """
        parts = [p for p in text.strip().strip("[]()").replace(" ", ",").split(",") if p]
        if len(parts) != 4:
            raise ValueError(f"a box is four numbers x1,y1,x2,y2; got {text!r}")
        box = cls(*(float(p) for p in parts))
        if not all(math.isfinite(v) for v in (box.x1, box.y1, box.x2, box.y2)):  # nan, inf, 1e400
            raise ValueError(f"box {text!r} has a coordinate that is not a finite number: "
                             "give pixel positions, such as 120,40,200,180")
        if not (box.x2 > box.x1 and box.y2 > box.y1):
            raise ValueError(f"box {text!r} is empty: need x2 > x1 and y2 > y1")
        return box


def validate_box(box: Box, width: int, height: int, min_side: float = 2.0) -> tuple[Box | None, str]:
    """Clip ``box`` to the image and say whether anything usable is left.

    Returns:
        ``(clipped_box, "")`` when usable, else ``(None, reason)`` for zero-area or outside boxes.
    """
    if not all(math.isfinite(v) for v in (box.x1, box.y1, box.x2, box.y2)):
        return None, "coordinates are not finite"
    clipped = box.clip(width, height)
    if clipped.width < min_side or clipped.height < min_side:
        if box.width <= 0 or box.height <= 0:
            return None, "zero-area box"
        if clipped == box:
            return None, f"box {box.as_list()} is smaller than {min_side:g} px"
        return None, f"box {box.as_list()} lies outside the {width}x{height} image"
    return clipped, ""


@dataclass(frozen=True)
class CropSpec:
    """How a region becomes an encoder input; stored in the model's metadata."""

    size: int = 128  # output side in pixels (square)
    context: float = 0.1  # fraction of the box side added on every side before cropping
    mean: float = 0.5  # intensity normalisation: (x - mean) / std on [0, 1] pixels
    std: float = 0.25


def square_window(box: Box, context: float) -> Box:
    """The square around ``box`` (side = longer side * (1 + 2*context)) with the same centre."""
    cx, cy = box.center
    half = max(box.width, box.height) * (1.0 + 2.0 * context) / 2.0
    return Box(cx - half, cy - half, cx + half, cy + half)


def crop_region(image: np.ndarray, box: Box, spec: CropSpec = CropSpec()) -> np.ndarray:
    """Cut the square window around ``box`` from ``image`` and resize it to ``spec.size``.

    The crop of one box; :func:`crop_regions` (the same definition) cuts many boxes of one
    image faster. Parts of the window outside the image are filled with 0 (black, as outside
    a film). The crop keeps the image's orientation: no flips, ever.

    Args:
        image: ``(H, W)`` float32 in [0, 1], bright = dense (MONOCHROME2 convention).
        box: region in pixels of ``image``.
        spec: output size and context.

    Returns:
        ``(size, size)`` float32 in [0, 1].
    """
    return crop_regions(image, [box], spec)[0]


def crop_regions(image: np.ndarray, boxes: Sequence[Box], spec: CropSpec = CropSpec()) -> np.ndarray:
    """Crops of ``boxes`` from ``image``: ``(N, size, size)`` float32 in [0, 1]. THE crop definition.

    The square window of a box (:func:`square_window`) is cut with the image's orientation
    (never flipped), zero outside the image, and resampled to ``spec.size``:

    - a window larger than the output: each output pixel is the area-weighted mean of the
      image over its part of the (sub-pixel) window, computed on pyramid level ``k``, the
      largest ``k`` with ``window / 2**k >= spec.size`` (level 0 is the image, level ``k + 1``
      the 2x2 block means of level ``k``). One cheap pyramid per film replaces resampling
      every big window at full resolution; the area mean keeps brightness exactly.
    - a window of the output size or smaller: its integer pixel hull, resized bilinearly.
    """
    levels = [np.asarray(image, dtype=np.float32)]
    out = np.empty((len(boxes), spec.size, spec.size), dtype=np.float32)
    for n, box in enumerate(boxes):
        win = square_window(box, spec.context)
        if win.width <= spec.size:
            out[n] = _cut_small(levels[0], win, spec.size)
            continue
        k = _level(win.width, spec.size, levels[0].shape)
        while len(levels) <= k:
            levels.append(_half(levels[-1]))
        out[n] = _cut_area(levels[k], win.scale(0.5**k), spec.size)
    return out


def _level(side: float, size: int, shape: tuple[int, int]) -> int:
    """Pyramid level for a window of ``side`` px: halve while the window stays >= ``size`` px."""
    k = 0
    while side / 2 ** (k + 1) >= size and min(shape) >> (k + 1) >= 2:
        k += 1
    return k


def _half(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` -> ``(H // 2, W // 2)``: the mean of each 2x2 block (an odd last row/column is dropped)."""
    h, w = image.shape
    a = image[: h - h % 2, : w - w % 2]
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def _hull(image: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """``image[y1:y2, x1:x2]`` with zeros where that range leaves the image."""
    h, w = image.shape
    canvas = np.zeros((y2 - y1, x2 - x1), dtype=np.float32)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return canvas


def _cut_area(image: np.ndarray, win: Box, size: int) -> np.ndarray:
    """Area-mean resampling of the square ``win`` (sub-pixel, larger than ``size``) to ``(size, size)``."""
    x1, y1 = int(math.floor(win.x1)), int(math.floor(win.y1))
    x2, y2 = int(math.ceil(win.x2)), int(math.ceil(win.y2))
    canvas = _hull(image, x1, y1, x2, y2)  # (hy, hx)
    ry = _area_weights(win.y1 - y1, win.height, y2 - y1, size)  # (size, hy)
    rx = _area_weights(win.x1 - x1, win.width, x2 - x1, size)  # (size, hx)
    return np.clip(ry @ canvas @ rx.T, 0.0, 1.0)  # (size, size)


def _area_weights(start: float, length: float, n_in: int, size: int) -> np.ndarray:
    """``(size, n_in)``: output pixel i averages input ``[start + i*s, start + (i+1)*s)``, s = length/size."""
    step = length / size
    edges = start + np.arange(size + 1) * step  # (size + 1,) output pixel borders, input px
    j = np.arange(n_in, dtype=np.float64)  # input pixel j covers [j, j + 1)
    overlap = np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j)  # (size, n_in)
    return (np.clip(overlap, 0.0, None) / step).astype(np.float32)


def _cut_small(image: np.ndarray, win: Box, size: int) -> np.ndarray:
    """The integer hull of a window no larger than ``size``, resized up bilinearly (exact when equal)."""
    x1, y1 = int(math.floor(win.x1)), int(math.floor(win.y1))
    side = max(1, int(math.ceil(win.x2)) - x1)
    canvas = _hull(image, x1, y1, x1 + side, y1 + side)
    if side != size:
        canvas = np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BILINEAR),
                            dtype=np.float32)
    return np.clip(canvas, 0.0, 1.0)


def normalize(crops: np.ndarray, spec: CropSpec = CropSpec()) -> np.ndarray:
    """Crops ``(N, S, S)`` in [0, 1] -> encoder input ``(N, 1, S, S)`` float32."""
    x = (np.asarray(crops, dtype=np.float32) - spec.mean) / spec.std
    return x[:, None, :, :]


ENLARGED = 0.5  # CTR above this: an enlarged heart (the usual PA-film threshold)
CTR_DECIMALS = 3  # a CTR as payloads and results show it: to a thousandth (a pixel of a ~3000 px film)


def cardiothoracic_ratio(boxes: Mapping[str, Box]) -> float | None:
    """Heart width / thoracic width, from the heart and lung boxes of one film.

    Heart width is the width of the ``cardiac-silhouette`` box. Thoracic width is the widest
    extent across both lungs: from the outer edge of the right lung to the outer edge of the left
    (``min x1`` to ``max x2`` of the ``right-lung`` and ``left-lung`` boxes). With boxes drawn
    tight around human masks this is the CTR of the masks (widest heart over widest lungs); with
    the localizer's or a scene graph's boxes it is the CTR an ingest stores in payloads (``ctr``).

    Args:
        boxes: boxes by anatomy slug; other slugs are ignored.

    Returns:
        The ratio, or None when a box is missing or the lungs have no width.
    """
    try:
        heart, right, left = boxes["cardiac-silhouette"], boxes["right-lung"], boxes["left-lung"]
    except KeyError:
        return None
    thorax = max(right.x2, left.x2) - min(right.x1, left.x1)
    return (heart.x2 - heart.x1) / thorax if thorax > 0 else None
