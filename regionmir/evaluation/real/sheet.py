"""The real-check preview sheet: films with their true lung and heart boxes and the localizer's, in a grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TRUTH = (90, 255, 90)
PREDICTED = {"right-lung": (255, 140, 0), "left-lung": (0, 200, 255),  # patient right orange, left cyan
             "cardiac-silhouette": (255, 0, 255)}  # heart magenta
LETTER = {"right-lung": "R", "left-lung": "L", "cardiac-silhouette": "H"}


def film_tile(image: np.ndarray, truth: dict, predicted: dict, iou: dict, side: int = 256) -> Image.Image:
    """One film fitted into a ``side`` square: truth boxes green, predicted lungs orange/cyan,
    predicted heart magenta, IoU text (R, L, H).

    The film is shown as stored (never mirrored): the patient's right lung is on the image left.
    """
    h, w = image.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).resize(size, Image.Resampling.BOX)
    tile = Image.new("RGB", (side, side))
    tile.paste(grey.convert("RGB"), ((side - size[0]) // 2, (side - size[1]) // 2))
    off = ((side - size[0]) / 2, (side - size[1]) / 2)
    draw = ImageDraw.Draw(tile)
    for boxes, colour_of in ((truth, lambda k: TRUTH), (predicted, PREDICTED.get)):
        for slug, b in boxes.items():
            xy = [b.x1 * scale + off[0], b.y1 * scale + off[1], b.x2 * scale + off[0], b.y2 * scale + off[1]]
            draw.rectangle(xy, outline=colour_of(slug), width=2)
    text = "  ".join(f"{LETTER.get(k, k[0].upper())} {v:.2f}" for k, v in sorted(iou.items(), reverse=True))
    if text:
        draw.rectangle([0, side - 14, side, side], fill=(0, 0, 0))
        draw.text((3, side - 13), "IoU " + text, fill=(255, 255, 255))
    return tile


def write_sheet(results, path: str | Path, columns: int = 4, side: int = 256) -> Path | None:
    """A grid of the results that kept their image; returns the PNG path (None if none kept)."""
    kept = [r for r in results if r.image is not None]
    if not kept:
        return None
    rows = (len(kept) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * side, rows * side))
    for i, r in enumerate(kept):
        sheet.paste(film_tile(r.image, r.truth, r.predicted, r.iou, side), ((i % columns) * side, (i // columns) * side))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
