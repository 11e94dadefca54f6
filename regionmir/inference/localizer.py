"""ONNX anatomy localizer via onnxruntime: a frontal chest radiograph -> 29 boxes + confidence.

No torch here. The image is letterboxed (resized to fit a ``S x S`` square keeping its aspect
ratio, centred, padded with 0), normalised with the model's ``norm_mean``/``norm_std``, and the
network returns, for each of the 29 boxed Chest ImaGenome regions in ``meta.anatomies`` order,
a box in normalized letterbox coordinates and a confidence. The confidence is the network's
own estimate of the IoU between its box and the true region box: an IoU-prediction head
trained against the IoU the box head actually achieved, then Platt-scaled on the held-out
valid split, so 0.8 means "expect about 0.8 IoU" on films like the training archive. It is not
an out-of-distribution detector: a non-chest image can still get confident boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from regionmir.annotations import Region
from regionmir.errors import ModelError
from regionmir.inference.folder import ModelFolder
from regionmir.inference.runtime import open_model
from regionmir.regions import Box

LETTERBOX = "center-pad0"  # metadata_props["letterbox"]: how the image is fitted to the square
BOX_FORMAT = "xyxy-norm"  # metadata_props["box_format"]: x1,y1,x2,y2 in [0,1] of the square


@dataclass(frozen=True)
class Letterbox:
    """Where a ``width x height`` image sits in the ``size x size`` model input."""

    size: int
    width: int  # original pixels
    height: int
    new_width: int  # resized image inside the square
    new_height: int
    left: int  # padding before the image
    top: int

    @classmethod
    def of(cls, width: int, height: int, size: int) -> Letterbox:
        """Fit the longer side to ``size``; centre the other one (padding split floor/ceil)."""
        scale = size / max(width, height)
        nw = min(size, max(1, round(width * scale)))
        nh = min(size, max(1, round(height * scale)))
        return cls(size, width, height, nw, nh, (size - nw) // 2, (size - nh) // 2)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """``(R, 4)`` normalized ``x1, y1, x2, y2`` of the square -> original pixels (clipped)."""
        b = np.asarray(boxes, dtype=np.float64) * self.size  # (R, 4) square pixels
        sx, sy = self.width / self.new_width, self.height / self.new_height
        x = (b[:, [0, 2]] - self.left) * sx
        y = (b[:, [1, 3]] - self.top) * sy
        x = _at_least_one_pixel(np.clip(np.sort(x, axis=1), 0, self.width), self.width)
        y = _at_least_one_pixel(np.clip(np.sort(y, axis=1), 0, self.height), self.height)
        return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)

    def from_original(self, boxes: np.ndarray) -> np.ndarray:
        """``(R, 4)`` original pixels -> normalized coordinates of the square (inverse)."""
        b = np.asarray(boxes, dtype=np.float64)
        sx, sy = self.new_width / self.width, self.new_height / self.height
        x = b[:, [0, 2]] * sx + self.left
        y = b[:, [1, 3]] * sy + self.top
        return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1) / self.size


def _at_least_one_pixel(lohi: np.ndarray, limit: int) -> np.ndarray:
    """``(R, 2)`` sorted, clipped intervals widened to >= 1 pixel inside ``[0, limit]``."""
    hi = np.maximum(lohi[:, 1], np.minimum(lohi[:, 0] + 1, limit))
    lo = np.minimum(lohi[:, 0], hi - 1)
    return np.stack([lo, hi], axis=1)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """``(H, W)`` float32 [0, 1] -> ``(size, size)`` float32 canvas (area-averaged resize)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ModelError(f"The localizer takes a 2-D grey image; got shape {image.shape}")
    if min(image.shape) < 2:  # a line of pixels has no regions to place, nor room for a box
        raise ModelError(f"The image is {image.shape[1]}x{image.shape[0]} pixels: too small to place "
                         "regions on (at least 2 pixels each way, a chest film has hundreds)")
    h, w = image.shape
    geo = Letterbox.of(w, h, size)
    small = Image.fromarray(image).resize((geo.new_width, geo.new_height), Image.Resampling.BOX)
    canvas = np.zeros((size, size), dtype=np.float32)
    canvas[geo.top : geo.top + geo.new_height, geo.left : geo.left + geo.new_width] = np.asarray(small)
    return np.clip(canvas, 0.0, 1.0), geo


class Localizer:
    """An exported RegionMIR anatomy localizer running in onnxruntime."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0):
        """Load ``path`` (a model folder or an ``.onnx`` file); ``threads`` > 0: CPU threads, no spinning.

        Raises:
            ModelError: missing or unreadable file, metadata missing, or not a localizer.
        """
        self.path = ModelFolder(path).file("localizer")
        self._session, self.meta, props = open_model(self.path, "localizer", device, threads)
        self.providers = list(self._session.get_providers())
        if props.get("letterbox") != LETTERBOX or props.get("box_format") != BOX_FORMAT:
            raise ModelError(
                f"{self.path} uses letterbox={props.get('letterbox')!r}, box_format="
                f"{props.get('box_format')!r}; this RegionMIR reads {LETTERBOX!r}/{BOX_FORMAT!r}. "
                "Retrain it with `regionmir train-localizer`."
            )
        self.model_id = self.meta.model_id
        self.size = self.meta.input_size
        self.anatomies = self.meta.anatomy_list()

    def __repr__(self) -> str:
        return f"Localizer({self.path}, model_id={self.model_id}, providers={self.providers})"

    def predict(self, canvases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on letterboxed canvases ``(N, S, S)`` [0, 1].

        Returns:
            ``boxes (N, R, 4)`` normalized square coordinates, ``confidence (N, R)`` in [0, 1].
        """
        x = (np.asarray(canvases, np.float32) - self.meta.norm_mean) / self.meta.norm_std
        boxes, conf = self._session.run(["boxes", "confidence"], {"image": x[:, None]})
        return boxes, conf

    def locate(self, image: np.ndarray) -> list[Region]:
        """The boxed regions of a frontal radiograph ``(H, W)`` float32 [0, 1], bright = dense.

        Returns:
            One :class:`Region` per anatomy of the model (29), box in original pixels,
            ``confidence`` = predicted IoU of that box with the true region.

        Raises:
            ModelError: the image is not 2-D.
        """
        canvas, geo = letterbox(image, self.size)
        boxes, conf = self.predict(canvas[None])
        pixels = geo.to_original(boxes[0])  # (R, 4)
        return [
            Region(anatomy, Box(*map(float, b)), confidence=float(np.clip(c, 0.0, 1.0)))
            for anatomy, b, c in zip(self.anatomies, pixels, conf[0])
        ]


def load_localizer(model: str | Path | None = None, device: str = "auto", threads: int = 0) -> Localizer | None:
    """The localizer in ``model`` (folder or .onnx); with ``model=None`` the default model folder.

    Returns:
        The localizer, or None when ``model`` is None and the default folder has none.

    Raises:
        ModelError: ``model`` was given and holds no usable localizer.
    """
    if model is None:
        return ModelFolder().load_localizer(device=device, threads=threads)
    return Localizer(model, device=device, threads=threads)


_SIDE_COLOURS = {"right": (255, 140, 0), "left": (0, 200, 255), None: (120, 255, 120)}


def draw_regions(image: np.ndarray, regions: list[Region], max_side: int = 1024) -> Image.Image:
    """An RGB preview: the film (longer side <= ``max_side``) with each region's box and label.

    Patient-right regions are orange, patient-left cyan, midline green; the label is the slug
    and the confidence. Nothing is mirrored: the film is shown as stored.
    """
    from PIL import ImageDraw

    h, w = image.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).resize(size, Image.Resampling.BOX)
    canvas = grey.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for r in regions:
        colour = _SIDE_COLOURS[r.anatomy.side]
        b = r.box.scale(scale)
        draw.rectangle([b.x1, b.y1, b.x2, b.y2], outline=colour, width=max(1, round(2 * max(size) / 1024)))
        conf = "" if r.confidence is None else f" {r.confidence:.2f}"
        draw.text((b.x1 + 3, b.y1 + 2), r.anatomy.slug + conf, fill=colour)
    return canvas
