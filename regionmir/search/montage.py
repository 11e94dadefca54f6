"""Search montages: the query crop beside the top hits, each hit in its whole image with its box."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from regionmir.regions import Box

log = logging.getLogger("regionmir")

TILE = 256  # tile side in pixels
LABEL = 18  # label strip height under each tile
COLUMNS = 6  # tiles per row: the query, then hits left to right, top to bottom


def _to_rgb(pixels: np.ndarray) -> Image.Image:
    """``(H, W)`` float [0, 1] -> RGB image (grey)."""
    grey = (np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _fit(img: Image.Image, boxes: list[Box]) -> Image.Image:
    """``img`` scaled to fit a TILE square (centred on black) with ``boxes`` drawn in red."""
    scale = TILE / max(img.width, img.height)
    small = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (TILE, TILE))
    ox, oy = (TILE - small.width) // 2, (TILE - small.height) // 2
    tile.paste(small, (ox, oy))
    draw = ImageDraw.Draw(tile)
    for b in boxes:
        draw.rectangle([ox + b.x1 * scale, oy + b.y1 * scale, ox + b.x2 * scale, oy + b.y2 * scale], outline=(255, 40, 40), width=2)
    return tile


def _hit_tile(archive_root: Path | None, payload: dict) -> Image.Image:
    """The hit's whole image with its box, or a grey placeholder when the file is unreachable."""
    from regionmir.archive import resolve_path
    from regionmir.dicom import read_image
    from regionmir.errors import ImageReadError

    path = resolve_path(archive_root or ".", str(payload.get("path", "")))
    try:
        if path is None:
            raise ImageReadError(str(payload.get("path")), f"not found under the archive root {archive_root}")
        rad = read_image(path)
    except ImageReadError as e:
        log.warning("montage: %s", e)
        return Image.new("RGB", (TILE, TILE), (60, 60, 60))
    return _fit(_to_rgb(rad.pixels), [Box(*payload["box"])])


def write_montage(outcome, archive_root: str | Path | None, out: str | Path, top: int = 10) -> Path:
    """Write ``out`` (PNG): the query (crop, or whole image for 'all') then the top hits.

    Hit images are read from ``archive_root / payload["path"]``.
    """
    if outcome.studies is None:
        result = outcome.regions[0]
        first = _fit(_to_rgb(result.crop), [])
        hits = [(f"#{i} {h.score:.3f}", h.payload) for i, h in enumerate(result.hits[:top], 1)]
        head = f"query {result.query.anatomy.slug}"
    else:
        first = _fit(_to_rgb(outcome.radiograph.pixels), [r.query.box for r in outcome.regions])
        hits = [(f"#{i} {s.score:.3f}", s.best.payload) for i, s in enumerate(outcome.studies[:top], 1)]
        head = "query (all regions)"
    tiles = [(head, first)] + [(label, _hit_tile(Path(archive_root) if archive_root else None, p)) for label, p in hits]
    cols = min(COLUMNS, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (TILE * cols, (TILE + LABEL) * rows), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for k, (label, tile) in enumerate(tiles):
        x, y = (k % cols) * TILE, (k // cols) * (TILE + LABEL)
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + TILE + 3), label, fill=(255, 255, 255))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
