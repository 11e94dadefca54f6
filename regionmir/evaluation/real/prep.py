"""Build a real-film check folder from the covid-chestxray-dataset (with torchxrayvision's lung
masks) and, optionally, the Wingspan cardiothoracic-ratio set (lung and heart masks, CTR).

    git clone <covid-chestxray-dataset> /work/data/covid     # or a snapshot of it
    pip download --no-deps torchxrayvision==1.5.7 -d /work/data/txrv
    # Wingspan: the repository's wingspan/ folder and ctr_ground_truth.csv (never its jsrt/ folder)
    python -m regionmir.evaluation.real.prep /work/data/covid \
        /work/data/txrv/torchxrayvision-1.5.7-py3-none-any.whl /work/data/real [/work/data/wingspan-src]

Writes ``OUT/films.csv`` (see :mod:`regionmir.evaluation.real.films`), ``OUT/images`` (links to the
frontal films; Wingspan's under ``images/wingspan/``) and ``OUT/masks`` (the human-reviewed v7labs
lung masks). Wingspan's masks become boxes here (``right_lung``, ``left_lung``, ``heart``: pixels
above 127, specks ignored). Patients are kept only as pseudonyms (``group``); the split
(``train``/``test``) is made by patient, so no patient has films on both sides. Covid patient
keys are hashed as they always were (the split does not move); Wingspan's (one film per patient)
are hashed with a ``wingspan:`` prefix. Nothing is downloaded here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

FRONTAL = ("PA", "AP", "AP Supine", "AP Erect")
MASKS_ZIP = "torchxrayvision/data/semantic_masks_v7labs_lungs.zip"
BOXES_JSON = "annotations/imageannotation_ai_lung_bounding_boxes.json"
COVID, WINGSPAN = "covid-chestxray", "wingspan"  # the ``source`` column
WINGSPAN_PARTS = {"right_lung": "right_lung", "left_lung": "left_lung", "heart": "heart"}  # column -> mask folder


def group_of(patient_id: str) -> str:
    """A stable pseudonym of a dataset patient id (same on every install, so splits agree)."""
    return "rp-" + hashlib.sha256(f"regionmir-realcheck|{patient_id}".encode()).hexdigest()[:12]


def split_of(group: str, test_share: float = 0.5) -> str:
    """``test`` for about ``test_share`` of the patients, chosen by their pseudonym's hash."""
    return "test" if int(group[3:], 16) % 1000 < test_share * 1000 else "train"


def _extract_masks(wheel: Path, out: Path) -> dict[str, str]:
    """Unpack the lung masks (from the wheel, or a folder that already holds them): stem -> path."""
    out.mkdir(parents=True, exist_ok=True)
    if wheel.is_dir():
        files = [p for p in wheel.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg")]
        return {p.stem: str(p) for p in files}
    with zipfile.ZipFile(wheel) as whl, zipfile.ZipFile(whl.open(MASKS_ZIP)) as zf:
        for name in zf.namelist():
            if not name.endswith("/"):
                (out / Path(name).name).write_bytes(zf.read(name))
    return {p.stem: str(p.relative_to(out.parent)) for p in out.iterdir()}


def _coco_boxes(repo: Path) -> dict[str, dict[str, str]]:
    """file name -> {"right_lung": "x1 y1 x2 y2", "left_lung": ...} from the COCO lung boxes."""
    path = repo / BOXES_JSON
    if not path.is_file():
        return {}
    coco = json.loads(path.read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    cats = {c["id"]: c["name"].lower().replace(" ", "_") for c in coco["categories"]}
    out: dict[str, dict[str, str]] = {}
    for a in coco["annotations"]:
        if not a.get("bbox") or None in a["bbox"]:
            continue
        x, y, w, h = a["bbox"]
        out.setdefault(names[a["image_id"]], {})[cats[a["category_id"]]] = f"{x} {y} {x + w} {y + h}"
    return out


def covid_rows(repo: Path, masks_source: Path, out: Path, test_share: float = 0.5) -> list[dict[str, str]]:
    """films.csv rows of the covid-chestxray-dataset's frontal films (links made in ``out/images``)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    masks = _extract_masks(masks_source, out / "masks")
    boxes = _coco_boxes(repo)
    with (repo / "metadata.csv").open(newline="", encoding="latin-1") as fh:
        rows = [r for r in csv.DictReader(fh) if r["view"].strip() in FRONTAL]
    listed = []
    for r in rows:
        src = repo / "images" / r["filename"]
        if not src.is_file():
            continue
        link = out / "images" / r["filename"]
        if not link.exists():
            link.symlink_to(src.resolve())
        group = group_of(r["patientid"])
        b = boxes.get(r["filename"], {})
        mask = masks.get(Path(r["filename"]).stem, "")
        listed.append({"file": f"images/{r['filename']}", "mask": mask, "right_lung": b.get("right_lung", ""),
                       "left_lung": b.get("left_lung", ""), "heart": "", "view": r["view"].strip(),
                       "finding": r["finding"].strip(), "group": group,
                       "split": split_of(group, test_share), "license": r["license"].strip(),
                       "source": COVID, "ctr": ""})
    return listed


def mask_box(path: Path, min_fraction: float = 0.05) -> str:
    """``"x1 y1 x2 y2"`` around a mask's pixels above 127, blobs under ``min_fraction`` of it
    ignored; empty for an empty mask."""
    from PIL import Image
    from scipy import ndimage

    m = np.asarray(Image.open(path).convert("L")) > 127
    lab, n = ndimage.label(m)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    keep = np.isin(lab, 1 + np.flatnonzero(sizes >= min_fraction * max(1, sizes.sum())))
    if not keep.any():
        return ""
    ys, xs = np.nonzero(keep)
    return f"{xs.min()} {ys.min()} {xs.max() + 1} {ys.max() + 1}"


def wingspan_rows(source: Path, out: Path, test_share: float = 0.5) -> list[dict[str, str]]:
    """films.csv rows of the Wingspan set: ``source`` holds ``wingspan/png``, ``wingspan/mask/*``
    and ``ctr_ground_truth.csv`` (id, ctr; or it sits in ``source/wingspan``). Only ``wingspan/``
    is read: the repository's ``jsrt/`` folder is JSRT data, excluded from this project."""
    root = source / "wingspan" if (source / "wingspan" / "png").is_dir() else source
    ctr_file = next((p for p in (source / "ctr_ground_truth.csv", root / "ctr_ground_truth.csv") if p.is_file()), None)
    given = {}
    if ctr_file is not None:
        with ctr_file.open(newline="") as fh:
            given = {Path(r["id"]).stem: r["ctr"].strip() for r in csv.DictReader(fh)}
    (out / "images" / WINGSPAN).mkdir(parents=True, exist_ok=True)
    rows = []
    for png in sorted((root / "png").glob("*.png")):
        link = out / "images" / WINGSPAN / png.name
        if not link.exists():
            link.symlink_to(png.resolve())
        boxes = {col: mask_box(m) if (m := root / "mask" / part / png.name).is_file() else ""
                 for col, part in WINGSPAN_PARTS.items()}
        group = group_of(f"{WINGSPAN}:{png.stem}")  # one film per patient: the film's id is the patient's
        rows.append({"file": f"images/{WINGSPAN}/{png.name}", "mask": "", **boxes, "view": "frontal",
                     "finding": "", "group": group, "split": split_of(group, test_share), "license": "MIT",
                     "source": WINGSPAN, "ctr": given.get(png.stem, "")})
    return rows


def prepare(repo: Path | None, masks_source: Path | None, out: Path, test_share: float = 0.5,
            wingspan: Path | None = None) -> int:
    """Write the check folder from the covid set (``repo`` with ``masks_source``) and/or Wingspan;
    returns the number of films listed."""
    out.mkdir(parents=True, exist_ok=True)
    listed = covid_rows(repo, masks_source, out, test_share) if repo is not None else []
    if wingspan is not None:
        listed += wingspan_rows(wingspan, out, test_share)
    with (out / "films.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(listed[0]) if listed else ["file"])
        w.writeheader()
        w.writerows(listed)
    return len(listed)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: python -m regionmir.evaluation.real.prep COVID_REPO TXRV_WHEEL_OR_MASK_FOLDER OUT [WINGSPAN]")
    n = prepare(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
                wingspan=Path(sys.argv[4]) if len(sys.argv) == 5 else None)
    print(f"{n} frontal films listed in {Path(sys.argv[3]) / 'films.csv'}")
