"""A tiny PNG archive in the MIMIC-CXR + Chest ImaGenome layout, for the training and encoder tests.

Each anatomy has a fixed box (plus a little per-image jitter) and a fixed texture on the left
half of its box, so the anatomy is learnable and every crop is left/right asymmetric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from regionmir.anatomy import Anatomy
from regionmir.annotations import Region, SceneGraph, write_scene_graph
from regionmir.archive import SplitRow, write_split
from regionmir.regions import Box


def anatomy_box(anatomy: Anatomy, size: int, rng: np.random.Generator) -> Box:
    """The box of ``anatomy`` in a ``size`` image: a fixed layout plus ~2% jitter."""
    layout = np.random.default_rng(anatomy.index)
    cx, cy = layout.uniform(0.25, 0.75, 2) * size + rng.normal(0, 0.02 * size, 2)
    w, h = layout.uniform(0.12, 0.35, 2) * size
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2).clip(size, size)


def write_png_archive(root: Path, images: int = 10, size: int = 128, seed: int = 0) -> Path:
    """Write ``images`` PNGs with scene graphs and train/valid/test splits (70/10/20) under ``root``."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[SplitRow]] = {"train": [], "valid": [], "test": []}
    for i in range(images):
        img = rng.uniform(0.0, 0.15, (size, size)).astype(np.float32)
        regions = []
        for a in Anatomy:
            b = anatomy_box(a, size, rng)
            x1, y1, x2, y2 = (int(v) for v in (b.x1, b.y1, b.x2, b.y2))
            img[y1:y2, x1 : (x1 + x2) // 2] += 0.1 + 0.05 * (a.index % 9)
            regions.append(Region(a, b))
        dicom_id, study, subject = f"img{i:04d}", f"5{i:07d}", f"1{i:07d}"
        rel = f"files/p1{i % 10}/p{subject}/s{study}/{dicom_id}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / rel)
        sg = SceneGraph(dicom_id, study, subject, "PA", size, size, tuple(regions))
        write_scene_graph(sg, root / "scene_graph")
        split = "train" if i < 0.7 * images else ("valid" if i < 0.8 * images else "test")
        rows[split].append(SplitRow(dicom_id, subject, study, rel))
    for name, split_rows in rows.items():
        write_split(root, name, split_rows)
    return root
