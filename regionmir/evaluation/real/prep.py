"""Build a real-film check folder from the covid-chestxray-dataset and torchxrayvision's lung masks.

    git clone <covid-chestxray-dataset> /work/data/covid     # or a snapshot of it
    pip download --no-deps torchxrayvision==1.5.7 -d /work/data/txrv
    python -m regionmir.evaluation.real.prep /work/data/covid /work/data/txrv/torchxrayvision-1.5.7-py3-none-any.whl /work/data/real

Writes ``OUT/films.csv`` (see :mod:`regionmir.evaluation.real.films`), ``OUT/images`` (links to the
frontal films) and ``OUT/masks`` (the human-reviewed v7labs lung masks). Patients are kept only
as pseudonyms (``group``); the split (``train``/``test``) is made by patient, so no patient has
films on both sides. Nothing is downloaded here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import zipfile
from pathlib import Path

FRONTAL = ("PA", "AP", "AP Supine", "AP Erect")
MASKS_ZIP = "torchxrayvision/data/semantic_masks_v7labs_lungs.zip"
BOXES_JSON = "annotations/imageannotation_ai_lung_bounding_boxes.json"


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


def prepare(repo: Path, masks_source: Path, out: Path, test_share: float = 0.5) -> int:
    """Write the check folder; returns the number of films listed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
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
                       "left_lung": b.get("left_lung", ""), "view": r["view"].strip(),
                       "finding": r["finding"].strip(), "group": group,
                       "split": split_of(group, test_share), "license": r["license"].strip()})
    with (out / "films.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(listed[0]) if listed else ["file"])
        w.writeheader()
        w.writerows(listed)
    return len(listed)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m regionmir.evaluation.real.prep COVID_REPO TXRV_WHEEL_OR_MASK_FOLDER OUT")
    n = prepare(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"{n} frontal films listed in {Path(sys.argv[3]) / 'films.csv'}")
