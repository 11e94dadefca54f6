"""The real-film check: localizer lung IoU, encoder accuracy on real lung crops, findings retrieval.

Everything is measured on the ``test`` films of a check folder (see :mod:`regionmir.evaluation.real.films`):
truth is the lung mask (or box) of each film. Real films carry no heart or clavicle outlines here,
so those regions are not scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regionmir.anatomy import Anatomy
from regionmir.evaluation import metrics
from regionmir.evaluation.real.films import RealFilm, read_films, truth_boxes
from regionmir.regions import Box

LUNGS = (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG)


@dataclass
class FilmResult:
    """What the models did on one film."""

    film: RealFilm
    image: np.ndarray | None  # kept only for the preview sheet's films
    truth: dict[str, Box]
    predicted: dict[str, Box]  # localizer lung boxes (empty without a localizer)
    iou: dict[str, float] = field(default_factory=dict)
    crops: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)  # slug -> (crop, box source)


def lung_iou(truth: dict[str, Box], predicted: dict[str, Box]) -> dict[str, float]:
    """IoU per lung present in both (keys ``right-lung``/``left-lung``)."""
    return {k: truth[k].iou(predicted[k]) for k in truth if k in predicted}


def findings_retrieval(emb: np.ndarray, findings: list[str], groups: list[str], k: int = 10) -> dict:
    """Findings retrieval among real crops of one anatomy: relevant = same finding label.

    Each crop queries all crops of other patients (cosine ranking). Chance is the share of
    relevant crops in the query's pool, averaged over queries.
    """
    sims = emb @ emb.T
    g, f = np.asarray(groups), np.asarray(findings)
    p, ap, hr, cp, chr_ = [], [], [], [], []
    for i in range(len(f)):
        pool = np.flatnonzero(g != g[i])
        if pool.size == 0:
            continue
        rel_pool = f[pool] == f[i]
        ranked = rel_pool[np.argsort(-sims[i, pool], kind="stable")]
        n_rel = int(rel_pool.sum())
        p.append(metrics.precision_at_k(ranked, k))
        ap.append(metrics.average_precision_at_k(ranked, k, n_rel) if n_rel else 0.0)
        hr.append(metrics.hit_rate_at_k(ranked, k))
        cp.append(metrics.chance_precision(n_rel, pool.size))
        chr_.append(metrics.chance_hit_rate_at_k(n_rel, pool.size, k))
    m = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    return {f"precision@{k}": m(p), f"map@{k}": m(ap), f"hit_rate@{k}": m(hr),
            "chance_precision": m(cp), f"chance_hit_rate@{k}": m(chr_), "queries": len(p)}


def _films_results(films, localizer, encoder, keep_images: int) -> list[FilmResult]:
    """Read each film once: truth, localizer lung boxes, encoder crops (true box, else predicted)."""
    from regionmir.dicom import read_image

    out = []
    for i, film in enumerate(films):
        image = read_image(film.path).pixels
        truth = truth_boxes(film, image.shape)
        pred = {}
        if localizer is not None:
            pred = {r.anatomy.slug: r.box for r in localizer.locate(image) if r.anatomy in LUNGS}
        res = FilmResult(film, image if i < keep_images else None, truth, pred, lung_iou(truth, pred))
        for a in LUNGS:
            box, src = (truth[a.slug], "truth") if a.slug in truth else (pred.get(a.slug), "localizer")
            if box is not None:
                res.crops[a.slug] = (encoder.crops(image, [box])[0], src)
        out.append(res)
    return out


def _encoder_part(results: list[FilmResult], encoder, k: int) -> dict:
    """Accuracy on true lung crops, same-anatomy@k among them, findings retrieval per lung."""
    crops, labels, groups, finds, box_src = [], [], [], [], []
    for r in results:
        for slug, (crop, src) in r.crops.items():
            crops.append(crop)
            labels.append(slug)
            groups.append(r.film.group)
            finds.append(r.film.finding)
            box_src.append(src)
    if not crops:
        return {}
    emb, logits = encoder.embed(np.stack(crops))
    pred = [a.slug for a in encoder.predict_anatomy(logits)]
    lab, src = np.asarray(labels), np.asarray(box_src)
    true = src == "truth"
    hit = np.asarray(pred) == lab
    out = {"crops_truth": int(true.sum()), "accuracy": float(hit[true].mean()) if true.any() else float("nan")}
    for a in LUNGS:
        sel = true & (lab == a.slug)
        out[f"accuracy_{a.slug}"] = float(hit[sel].mean()) if sel.any() else float("nan")
        other = a.contralateral().slug
        out[f"swaps_{a.slug}"] = float((np.asarray(pred)[sel] == other).mean()) if sel.any() else float("nan")
        names, counts = np.unique(np.asarray(pred)[sel], return_counts=True)
        top = np.argsort(-counts)[:3]
        out[f"predicted_{a.slug}"] = {str(names[i]): round(float(counts[i] / max(1, sel.sum())), 3) for i in top}
    t = np.flatnonzero(true)
    out[f"same_anatomy@{k}"] = metrics.same_label_at_k(emb[t], [labels[i] for i in t], k,
                                                       groups=[groups[i] for i in t])
    out["findings"] = {}
    for a in LUNGS:
        sel = np.flatnonzero(lab == a.slug)
        out["findings"][a.slug] = findings_retrieval(emb[sel], [finds[i] for i in sel],
                                                     [groups[i] for i in sel], k)
    return out


def run_check(folder: str | Path, model: str | Path | None, split: str = "test", k: int = 10,
              limit: int | None = None, keep_images: int = 12) -> tuple[dict, list[FilmResult]]:
    """Score the localizer and encoder of ``model`` (a model folder or a file in it; None: the
    default model folder) on the real films of ``folder``.

    Returns:
        ``(report, per-film results)``; the report has ``localizer`` (lung IoU), ``encoder``
        (real crop accuracy, same-anatomy@k, findings retrieval) and ``films`` counts.

    Raises:
        AnnotationError: the folder has no usable films.csv or no films in ``split``.
        ModelError: the model folder has no encoder.
    """
    from regionmir.errors import AnnotationError
    from regionmir.inference.folder import ModelFolder

    films = read_films(folder, split)[:limit]
    if not films:
        raise AnnotationError(f"{folder}/films.csv lists no films in split {split!r}; try --split all")
    models = ModelFolder(model)
    encoder = models.load_encoder()
    localizer = models.load_localizer()  # the one beside the encoder; None without one
    results = _films_results(films, localizer, encoder, keep_images)
    report = {"folder": str(folder), "split": split, "model_id": encoder.model_id,
              "films": len(results), "films_with_truth": sum(bool(r.truth) for r in results)}
    report["localizer"] = _localizer_part(results) if localizer is not None else None
    report["encoder"] = _encoder_part(results, encoder, k)
    return report, results


def _localizer_part(results: list[FilmResult]) -> dict:
    out: dict = {"localizer_films": sum(bool(r.iou) for r in results)}
    for name, sel in (("all", lambda v: True), ("PA", lambda v: v == "PA"), ("AP", lambda v: v.startswith("AP"))):
        vals = {a.slug: [r.iou[a.slug] for r in results if a.slug in r.iou and sel(r.film.view)] for a in LUNGS}
        both = vals["right-lung"] + vals["left-lung"]
        out[name] = {"n": len(vals["right-lung"]),
                     "iou_right": float(np.mean(vals["right-lung"])) if vals["right-lung"] else float("nan"),
                     "iou_left": float(np.mean(vals["left-lung"])) if vals["left-lung"] else float("nan"),
                     "iou_mean": float(np.mean(both)) if both else float("nan"),
                     "share_iou_0.5": float(np.mean(np.asarray(both) >= 0.5)) if both else float("nan")}
    return out
