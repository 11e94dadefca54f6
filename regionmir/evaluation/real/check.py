"""The real-film check: localizer box IoU (lungs, heart), encoder accuracy on real crops, retrieval, CTR.

Everything is measured on the ``test`` films of a check folder (see :mod:`regionmir.evaluation.real.films`),
per source and overall: truth is the lung mask (or box) and, where the source has one, the heart
outline's box (the ``cardiac-silhouette`` region). Clavicles and the other regions carry no real
truth here and are not scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regionmir.anatomy import Anatomy
from regionmir.evaluation import metrics
from regionmir.evaluation.real.ctr import cardiothoracic_ratio, ctr_errors
from regionmir.evaluation.real.films import RealFilm, read_films, truth_boxes
from regionmir.evaluation.real.retrieval import (
    enlarged_retrieval,
    findings_retrieval,
    same_label_share,
)
from regionmir.regions import Box

LUNGS = (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG)
HEART = Anatomy.CARDIAC_SILHOUETTE
SCORED = (*LUNGS, HEART)  # the regions real films have human truth for

__all__ = ["FilmResult", "findings_retrieval", "lung_iou", "run_check"]


@dataclass
class FilmResult:
    """What the models did on one film."""

    film: RealFilm
    image: np.ndarray | None  # kept only for the preview sheet's films
    truth: dict[str, Box]
    predicted: dict[str, Box]  # localizer lung and heart boxes (empty without a localizer)
    iou: dict[str, float] = field(default_factory=dict)
    crops: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)  # slug -> (crop, box source)


def lung_iou(truth: dict[str, Box], predicted: dict[str, Box]) -> dict[str, float]:
    """IoU per region present in both (keys ``right-lung``/``left-lung``/``cardiac-silhouette``)."""
    return {k: truth[k].iou(predicted[k]) for k in truth if k in predicted}


def sheet_picks(films: list[RealFilm], n: int) -> set[int]:
    """Indices of ``n`` films for the preview sheet, taken in turn from each source (first films
    first), so every source shows."""
    by_source: dict[str, list[int]] = {}
    for i, f in enumerate(films):
        by_source.setdefault(f.source, []).append(i)
    queues = list(by_source.values())
    picks: list[int] = []
    while len(picks) < n and any(queues):
        for q in queues:
            if q and len(picks) < n:
                picks.append(q.pop(0))
    return set(picks)


def _films_results(films, localizer, encoder, keep_images: int) -> list[FilmResult]:
    """Read each film once: truth, localizer boxes, encoder crops (true box, else predicted)."""
    from regionmir.dicom import read_image

    out = []
    keep = sheet_picks(films, keep_images)
    for i, film in enumerate(films):
        image = read_image(film.path).pixels
        truth = truth_boxes(film, image.shape)
        pred = {}
        if localizer is not None:
            pred = {r.anatomy.slug: r.box for r in localizer.locate(image) if r.anatomy in SCORED}
        res = FilmResult(film, image if i in keep else None, truth, pred, lung_iou(truth, pred))
        for a in SCORED:
            box, src = (truth[a.slug], "truth") if a.slug in truth else (pred.get(a.slug), "localizer")
            if box is not None:
                res.crops[a.slug] = (encoder.crops(image, [box])[0], src)
        out.append(res)
    return out


def _crop_table(results: list[FilmResult], encoder) -> dict:
    """Every crop embedded once: ``(N,)`` columns and ``emb`` ``(N, D)``."""
    rows = [(r, slug, crop, src) for r in results for slug, (crop, src) in r.crops.items()]
    if not rows:
        return {}
    emb, logits = encoder.embed(np.stack([c for _, _, c, _ in rows]))
    col = lambda f: np.asarray([f(r, slug, src) for r, slug, _, src in rows])
    return {"emb": emb, "pred": np.asarray([a.slug for a in encoder.predict_anatomy(logits)]),
            "label": col(lambda r, s, src: s), "group": col(lambda r, s, src: r.film.group),
            "finding": col(lambda r, s, src: r.film.finding), "truth": col(lambda r, s, src: src == "truth"),
            "source": col(lambda r, s, src: r.film.source),
            "ctr_true": col(lambda r, s, src: _nan(r.film.ctr if r.film.ctr is not None else cardiothoracic_ratio(r.truth))),
            "ctr_pred": col(lambda r, s, src: _nan(cardiothoracic_ratio(r.predicted)))}


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _encoder_stats(t: dict, sel: np.ndarray, k: int) -> dict:
    """Accuracy on true crops (all, lungs, per region) and same-anatomy@k among the selected crops."""
    m = lambda v: float(v.mean()) if v.size else float("nan")
    true = sel & t["truth"]
    hit = t["pred"] == t["label"]
    lung = np.isin(t["label"], [a.slug for a in LUNGS])
    out = {"crops_truth": int(true.sum()), "accuracy": m(hit[true]), "accuracy_lungs": m(hit[true & lung])}
    for a in SCORED:
        out[f"accuracy_{a.slug}"] = m(hit[true & (t["label"] == a.slug)])
    lt, tt = np.flatnonzero(true & lung), np.flatnonzero(true)
    out[f"same_anatomy@{k}"] = (metrics.same_label_at_k(t["emb"][lt], t["label"][lt], k, groups=t["group"][lt])
                                if lt.size else float("nan"))  # right vs left lung crops, as before the heart
    out[f"same_anatomy@{k}_heart"] = same_label_share(t["emb"][tt], t["label"][tt], t["group"][tt], HEART.slug, k)
    return out


def _encoder_part(results: list[FilmResult], encoder, k: int) -> dict:
    """Overall and per-source crop stats, lung swaps, findings retrieval per lung, enlarged hearts."""
    t = _crop_table(results, encoder)
    if not t:
        return {}
    everything = np.ones(len(t["label"]), bool)
    out = _encoder_stats(t, everything, k)
    for a in SCORED:
        sel = t["truth"] & (t["label"] == a.slug)
        if a in LUNGS:
            out[f"swaps_{a.slug}"] = float((t["pred"][sel] == a.contralateral().slug).mean()) if sel.any() else float("nan")
        names, counts = np.unique(t["pred"][sel], return_counts=True)
        top = np.argsort(-counts)[:3]
        out[f"predicted_{a.slug}"] = {str(names[i]): round(float(counts[i] / max(1, sel.sum())), 3) for i in top}
    out["by_source"] = {s: _encoder_stats(t, t["source"] == s, k) for s in sorted(set(t["source"]))}
    out["findings"] = {}
    for a in LUNGS:
        sel = np.flatnonzero((t["label"] == a.slug) & (t["finding"] != ""))  # films with a finding label
        out["findings"][a.slug] = findings_retrieval(t["emb"][sel], t["finding"][sel], t["group"][sel], k)
    h = np.flatnonzero(t["truth"] & (t["label"] == HEART.slug))
    out["enlarged_heart"] = enlarged_retrieval(t["emb"][h], t["ctr_true"][h], t["ctr_pred"][h], t["group"][h], k)
    return out


def run_check(folder: str | Path, model: str | Path | None, split: str = "test", k: int = 10,
              limit: int | None = None, keep_images: int = 12) -> tuple[dict, list[FilmResult]]:
    """Score the localizer and encoder of ``model`` (a model folder or a file in it; None: the
    default model folder) on the real films of ``folder``.

    Returns:
        ``(report, per-film results)``; the report has ``localizer`` (lung and heart IoU, overall,
        per view and per source), ``encoder`` (real crop accuracy, same-anatomy@k, findings and
        enlarged-heart retrieval), ``ctr`` (CTR errors; None without a localizer) and ``films`` counts.

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
              "films": len(results), "films_with_truth": sum(bool(r.truth) for r in results),
              "sources": {s: sum(r.film.source == s for r in results) for s in sorted({r.film.source for r in results})}}
    report["localizer"] = _localizer_part(results) if localizer is not None else None
    report["ctr"] = _ctr_part(results) if localizer is not None else None
    report["encoder"] = _encoder_part(results, encoder, k)
    return report, results


def _iou_stats(results: list[FilmResult]) -> dict:
    vals = {a.slug: [r.iou[a.slug] for r in results if a.slug in r.iou] for a in SCORED}
    both = vals["right-lung"] + vals["left-lung"]
    m = lambda v: float(np.mean(v)) if v else float("nan")
    return {"n": len(vals["right-lung"]), "iou_right": m(vals["right-lung"]), "iou_left": m(vals["left-lung"]),
            "iou_mean": m(both), "share_iou_0.5": m([v >= 0.5 for v in both]),
            "n_heart": len(vals[HEART.slug]), "iou_heart": m(vals[HEART.slug])}


def _localizer_part(results: list[FilmResult]) -> dict:
    """Box IoU of the lungs and the heart: all films, PA, AP, and per source."""
    out: dict = {"localizer_films": sum(bool(r.iou) for r in results)}
    for name, sel in (("all", lambda v: True), ("PA", lambda v: v == "PA"), ("AP", lambda v: v.startswith("AP"))):
        out[name] = _iou_stats([r for r in results if sel(r.film.view)])
    out["by_source"] = {s: _iou_stats([r for r in results if r.film.source == s])
                        for s in sorted({r.film.source for r in results})}
    return out


def _ctr_part(results: list[FilmResult]) -> dict:
    """CTR from the predicted boxes against the masks' and the source's own, overall and per source."""
    def errors(rs):
        return ctr_errors([cardiothoracic_ratio(r.predicted) for r in rs], [cardiothoracic_ratio(r.truth) for r in rs],
                          [r.film.ctr for r in rs])

    out = errors(results)
    out["by_source"] = {s: errors([r for r in results if r.film.source == s]) for s in sorted({r.film.source for r in results})}
    return out
