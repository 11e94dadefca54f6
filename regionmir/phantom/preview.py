"""Preview PNGs of phantom images with every region box drawn and labelled, plus a montage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from regionmir.annotations import read_scene_graph
from regionmir.archive import Archive

_COLOURS = {"right": (255, 80, 80), "left": (80, 230, 80), None: (80, 170, 255)}


def display_pixels(path: Path) -> np.ndarray:
    """A DICOM's pixels as ``(H, W)`` float32 in [0, 1], bright = dense (MONOCHROME1 inverted)."""
    import pydicom

    ds = pydicom.dcmread(path)
    a = ds.pixel_array.astype(np.float32) / float((1 << int(ds.BitsStored)) - 1)
    return 1.0 - a if ds.PhotometricInterpretation == "MONOCHROME1" else a


def draw(image: np.ndarray, regions, width: int = 768) -> Image.Image:
    """``image`` with each region's box and slug drawn, scaled to ``width`` pixels wide."""
    h, w = image.shape
    scale = width / w
    im = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    im = im.resize((width, round(h * scale)), Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(8, width // 80))
    for r in regions:
        b = r.box.scale(scale)
        colour = _COLOURS[r.anatomy.side]
        d.rectangle([b.x1, b.y1, b.x2, b.y2], outline=colour, width=1)
        label = r.anatomy.slug + (" *" + ",".join(r.findings) if r.findings else "")
        d.text((b.x1 + 2, b.y1 + 1), label, fill=colour, font=font)
    return im


def preview(archive_dir: str | Path, k: int = 8, width: int = 768) -> list[Path]:
    """Write ``preview/<dicom_id>.png`` for the first ``k`` images and ``preview/montage.png``.

    Returns:
        The written paths, the montage last.
    """
    root = Path(archive_dir)
    arch = Archive(root)
    out_dir = root / "preview"
    out_dir.mkdir(parents=True, exist_ok=True)
    written, tiles = [], []
    for path in arch.dicom_paths()[:k]:
        sg_path = arch.scene_graph_path(path.stem)
        regions = read_scene_graph(sg_path).regions if sg_path else ()
        im = draw(display_pixels(path), regions, width)
        written.append(out_dir / f"{path.stem}.png")
        im.save(written[-1])
        tiles.append(Image.fromarray(np.asarray(display_pixels(path) * 255, np.uint8)))
    if tiles:
        written.append(_montage(tiles, out_dir / "montage.png"))
    return written


def _montage(tiles: list[Image.Image], path: Path, cell: int = 320) -> Path:
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    sheet = Image.new("L", (cols * cell, rows * cell), 0)
    for i, t in enumerate(tiles):
        t = t.copy()
        t.thumbnail((cell, cell))
        x = (i % cols) * cell + (cell - t.width) // 2
        y = (i // cols) * cell + (cell - t.height) // 2
        sheet.paste(t, (x, y))
    sheet.save(path)
    return path
