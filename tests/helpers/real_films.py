"""Real-film folders for the tests: images/, masks/ and films.csv, as `evaluation.real.prep` writes them,
and a Wingspan-shaped source for prep to read."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_film_folder(folder: Path, films: list[tuple[str, np.ndarray, np.ndarray | None, dict]]) -> Path:
    """Write ``films``, each ``(name, uint8 image, lung mask or None, the rest of its films.csv row)``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rows = []
    for name, image, mask, row in films:
        Image.fromarray(image).save(folder / "images" / f"{name}.png")
        if mask is not None:
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{name}.png")
        rows.append({"file": f"images/{name}.png", "mask": "" if mask is None else f"masks/{name}.png", **row})
    with (folder / "films.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder


def write_wingspan_source(folder: Path, films: list[tuple[str, np.ndarray, dict[str, np.ndarray], float | None]]) -> Path:
    """Write a Wingspan-shaped source: ``wingspan/png``, ``wingspan/mask/{heart,left_lung,right_lung}``
    (uint8 masks as given, so soft edges can be tested) and ``ctr_ground_truth.csv`` (films with a CTR)."""
    (folder / "wingspan" / "png").mkdir(parents=True, exist_ok=True)
    given = []
    for name, image, masks, ctr in films:
        Image.fromarray(image).save(folder / "wingspan" / "png" / f"{name}.png")
        for part, m in masks.items():
            (folder / "wingspan" / "mask" / part).mkdir(parents=True, exist_ok=True)
            Image.fromarray(m.astype(np.uint8)).save(folder / "wingspan" / "mask" / part / f"{name}.png")
        if ctr is not None:
            given.append({"id": f"{name}.png", "ctr": f"{ctr:.4f}"})
    with (folder / "ctr_ground_truth.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "ctr"])
        w.writeheader()
        w.writerows(given)
    return folder
