"""Localizer evaluation: per-region IoU of the exported ONNX model against scene-graph boxes.

It runs the real inference path (:class:`regionmir.inference.localizer.Localizer` on full-size decoded
films), so the numbers describe what ``regionmir localize`` does. No torch needed.
"""

from __future__ import annotations

import numpy as np

from regionmir.anatomy import BOXED
from regionmir.archive import Archive
from regionmir.inference.localizer import Localizer
from regionmir.train.localizer.data import FRONTAL

KEY_REGIONS = ("right-lung", "left-lung", "cardiac-silhouette", "mediastinum")
CONF_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 1.01)


def collect(localizer: Localizer, archive: Archive, split: str,
            limit: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """IoU and confidence of every (image, region) with a true box: ``(n, 29)`` each, NaN if absent."""
    from regionmir.dicom import read_image

    ious, confs = [], []
    for path, sg in archive.iter_split(split):
        if sg.viewpoint.upper() not in FRONTAL:
            continue
        regions = localizer.locate(read_image(path).pixels)
        row_iou = np.full(len(BOXED), np.nan)
        row_conf = np.full(len(BOXED), np.nan)
        for i, pred in enumerate(regions):
            truth = sg.region(pred.anatomy)
            if truth is not None:
                row_iou[i] = pred.box.iou(truth.box)
                row_conf[i] = pred.confidence
        ious.append(row_iou)
        confs.append(row_conf)
        if limit and len(ious) >= limit:
            break
    return np.array(ious).reshape(-1, len(BOXED)), np.array(confs).reshape(-1, len(BOXED)), len(ious)


def summarize(ious: np.ndarray, confs: np.ndarray) -> dict:
    """Per-region mean IoU / IoU>=0.5 fraction / mean confidence, overall numbers, calibration."""
    regions = {}
    for i, anatomy in enumerate(BOXED):
        v = ious[:, i][~np.isnan(ious[:, i])]
        c = confs[:, i][~np.isnan(confs[:, i])]
        regions[anatomy.slug] = {
            "n": int(v.size),
            "mean_iou": float(v.mean()) if v.size else None,
            "iou50": float((v >= 0.5).mean()) if v.size else None,
            "mean_confidence": float(c.mean()) if c.size else None,
        }
    ok = ~np.isnan(ious)
    v, c = ious[ok], confs[ok]
    bins = []
    for lo, hi in zip(CONF_BINS[:-1], CONF_BINS[1:]):
        sel = (c >= lo) & (c < hi)
        bins.append({"confidence": [lo, min(hi, 1.0)], "n": int(sel.sum()),
                     "mean_iou": float(v[sel].mean()) if sel.any() else None})
    corr = float(np.corrcoef(v, c)[0, 1]) if v.size > 2 and v.std() > 0 and c.std() > 0 else None
    key = [regions[s]["mean_iou"] for s in KEY_REGIONS if regions[s]["mean_iou"] is not None]
    return {
        "boxes": int(v.size),
        "mean_iou": float(v.mean()) if v.size else None,
        "iou50": float((v >= 0.5).mean()) if v.size else None,
        "key_regions_mean_iou": {s: regions[s]["mean_iou"] for s in KEY_REGIONS},
        "key_regions_min_iou": min(key) if key else None,
        "mean_confidence": float(c.mean()) if c.size else None,
        "confidence_iou_corr": corr,
        "calibration": bins,
        "regions": regions,
    }


def evaluate(localizer: Localizer, archive: Archive, split: str, limit: int | None = None) -> dict:
    """Run the localizer on the frontal films of ``split`` and summarize (see :func:`summarize`)."""
    ious, confs, n = collect(localizer, archive, split, limit)
    return {"split": split, "images": n, **summarize(ious, confs)}


def markdown(report: dict) -> str:
    """The evaluation as a Markdown table (written to ``localizer_report.md``)."""
    lines = [
        f"# Localizer {report.get('model_id', '')}", "",
        f"Split `{report['split']}`: {report['images']} images, {report['boxes']} boxes. "
        f"Mean IoU {report['mean_iou']:.3f}; IoU >= 0.5: {report['iou50']:.1%}. "
        f"Confidence = predicted IoU (mean {report['mean_confidence']:.3f}, "
        f"Pearson r with true IoU {report['confidence_iou_corr'] or float('nan'):.2f}).", "",
        "| region | n | mean IoU | IoU >= 0.5 | mean confidence |", "|---|---|---|---|---|",
    ]
    for slug, r in report["regions"].items():
        if r["n"]:
            lines.append(f"| {slug} | {r['n']} | {r['mean_iou']:.3f} | {r['iou50']:.1%} | "
                         f"{r['mean_confidence']:.3f} |")
    lines += ["", "| confidence | n | mean IoU |", "|---|---|---|"]
    for b in report["calibration"]:
        iou = f"{b['mean_iou']:.3f}" if b["mean_iou"] is not None else "-"
        lines.append(f"| {b['confidence'][0]:.1f}-{b['confidence'][1]:.1f} | {b['n']} | {iou} |")
    return "\n".join(lines) + "\n"
