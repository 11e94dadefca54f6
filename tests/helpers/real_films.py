"""Real-film folders for the tests: images/, masks/ and films.csv, as `evaluation.real.prep` writes them."""

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
