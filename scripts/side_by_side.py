"""Phantoms beside real films, for judging the phantoms by eye: docs/phantom_vs_real.png.

Top row: phantoms of this version (new patients, random looks). Bottom row: real frontal films of
the real-check folder whose licence is CC BY (3.0 or 4.0), so the sheet may be shared; their
sources are listed in the caption file beside the PNG. No patient identifiers are drawn.

    python scripts/side_by_side.py /work/data/real docs/phantom_vs_real.png
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from regionmir.dicom import read_image
from regionmir.phantom import patient, render
from regionmir.evaluation.real.films import read_films

TILE = 200


def tile(image: np.ndarray) -> Image.Image:
    im = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    im.thumbnail((TILE, TILE), Image.Resampling.BOX)
    out = Image.new("L", (TILE, TILE))
    out.paste(im, ((TILE - im.width) // 2, (TILE - im.height) // 2))
    return out


def main(folder: str, out: str, n: int = 5, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    tops = []
    for i in range(n):
        p = patient.sample_patient(rng, i, f"1000000{i}")
        pose = patient.sample_pose(rng, 512, dt.date(2150, 1, 1))
        tops.append(tile(render.render(p, pose, [], rng).image))
    films = [f for f in read_films(folder, "all") if f.license.startswith("CC BY ") or f.license in ("CC BY 3.0", "CC BY 4.0")]
    pick = np.random.default_rng(seed).choice(len(films), size=min(n, len(films)), replace=False)
    bottoms = [tile(read_image(films[k].path).pixels) for k in pick]
    sheet = Image.new("L", (n * TILE, 2 * TILE))
    for i, t in enumerate(tops):
        sheet.paste(t, (i * TILE, 0))
    for i, t in enumerate(bottoms):
        sheet.paste(t, (i * TILE, TILE))
    sheet.save(out, optimize=True)
    caption = ["Top: RegionMIR phantoms. Bottom: real films from the covid-chestxray-dataset "
               "(github.com/ieee8023/covid-chestxray-dataset), each CC BY as listed in its metadata.csv:"]
    caption += [f"- {films[k].path.name} ({films[k].license}, {films[k].view})" for k in pick]
    Path(out).with_suffix(".md").write_text("\n".join(caption) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
