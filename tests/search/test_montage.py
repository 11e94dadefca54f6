"""Search montages: each hit's box is drawn where the region is, on the image as stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regionmir.anatomy import Anatomy
from regionmir.dicom import read_image
from regionmir.regions import Box
from regionmir.search.montage import TILE, write_montage
from regionmir.search.searcher import (
    QueryRegion,
    RegionResult,
    SearchOutcome,
    StudyResult,
)
from regionmir.store import Hit


def _png(path: Path, width: int, height: int) -> Path:
    Image.fromarray(np.full((height, width), 128, np.uint8)).save(path)
    return path


def _region_outcome(payloads: list[dict]) -> SearchOutcome:
    """A one-region search whose hits carry ``payloads`` (path and box)."""
    query = QueryRegion(Anatomy.RIGHT_LUNG, Box(0, 0, 8, 8), "box")
    hits = [Hit(f"h{i}", 0.9 - i / 10, p) for i, p in enumerate(payloads)]
    return SearchOutcome("q", False, False, None, [RegionResult(query, np.zeros((8, 8), np.float32), hits)])


def _tile(sheet: Path, k: int) -> np.ndarray:
    """Tile ``k`` (0 = the query) of a montage of at most COLUMNS tiles, as ``(TILE, TILE, 3)``."""
    with Image.open(sheet) as im:
        rgb = np.asarray(im.convert("RGB"))
    return rgb[:TILE, k * TILE:(k + 1) * TILE]


def _red_extent(tile: np.ndarray) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)``, inclusive, of the red (box outline) pixels of a tile."""
    red = (tile[..., 0] > 200) & (tile[..., 1] < 100) & (tile[..., 2] < 100)
    ys, xs = np.nonzero(red)
    assert xs.size, "no box drawn"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_hit_box_is_drawn_at_its_x_and_y_on_a_square_image(tmp_path):
    """A TILE-sided image is shown 1:1, so the outline is the payload box to the pixel (x across, y down)."""
    _png(tmp_path / "a.png", TILE, TILE)
    box = [40, 100, 90, 220]  # tall and off the diagonal: x and y swapped would land elsewhere
    out = write_montage(_region_outcome([{"path": "a.png", "box": box}]), tmp_path, tmp_path / "m.png")
    tile = _tile(out, 1)
    assert _red_extent(tile) == tuple(box)
    red = tile[..., 0] > 200
    assert red[160, 40] and red[160, 90] and red[100, 65] and red[220, 65]  # each edge, at its side
    assert not red[160, 65] and not red[65, 160]  # an outline: neither the inside nor the mirrored box


@pytest.mark.parametrize(("width", "height", "shown", "drawn"), [
    (128, 64, (0, 64, 256, 192), (20, 74, 60, 144)),  # wide: scale 2, letterboxed 64 px down
    (64, 128, (64, 0, 192, 256), (84, 10, 124, 80)),  # tall: scale 2, pillarboxed 64 px across
])
def test_hit_box_follows_the_scaled_and_centred_image(tmp_path, width, height, shown, drawn):
    """A non-square image is scaled to fit and centred; its box must move and scale with it."""
    _png(tmp_path / "a.png", width, height)
    hit = {"path": "a.png", "box": [10, 5, 30, 40]}
    tile = _tile(write_montage(_region_outcome([hit]), tmp_path, tmp_path / "m.png"), 1)
    grey = (tile[..., 0] == tile[..., 2]) & (tile[..., 0] > 60)  # the image; the border is black, the box red
    ys, xs = np.nonzero(grey)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == shown
    assert _red_extent(tile) == drawn


def test_query_boxes_of_all_regions_are_drawn_on_the_query_image(tmp_path):
    """With --anatomy all the query tile is the whole image with every query box, at its x and y."""
    radiograph = read_image(_png(tmp_path / "q.png", TILE, TILE))
    boxes = [Box(20, 60, 70, 200), Box(150, 30, 230, 90)]
    regions = [RegionResult(QueryRegion(a, b, "archive"), np.zeros((8, 8), np.float32), [])
               for a, b in zip((Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG), boxes)]
    best = Hit("h", 0.8, {"path": "missing.png", "box": [0, 0, 4, 4]})
    outcome = SearchOutcome("q", False, False, radiograph, regions, [StudyResult("s1", 0.8, {}, 1, best)])
    tile = _tile(write_montage(outcome, tmp_path, tmp_path / "m.png"), 0)
    for b in boxes:
        x1, y1, x2, y2 = (int(v) for v in (b.x1, b.y1, b.x2, b.y2))
        assert _red_extent(tile[y1:y2 + 1, x1:x2 + 1]) == (0, 0, x2 - x1, y2 - y1)
    red = tile[..., 0] > 200
    # two 2-px outlines (rings of 2(w + h) and 2(w + h) - 8 pixels), nothing else red
    assert red.sum() == sum(4 * (b.width + b.height) - 8 for b in boxes)
