"""Evaluation summary: per-query search records -> metrics overall, per anatomy, with chance levels and intervals.

Pure numpy (through :mod:`regionmir.evaluation.metrics`), no I/O. A record is one query region as
:func:`regionmir.evaluation.run.run_queries` makes it: the ranked relevance lists of its searches,
how many relevant items and how many candidates each searched pool held, and the predicted anatomy.
"""

from __future__ import annotations

from collections.abc import Sequence

from regionmir.evaluation import metrics as m


def retrieval(rows: Sequence[dict], rel: str, n: str, pool: str, ks: Sequence[int]) -> dict:
    """precision/mAP/hit rate/MRR/recall @k over rows whose ``n`` (relevant in collection) > 0,
    and the chance levels of a random ranking of each query's ``pool``."""
    use = [r for r in rows if r[n] > 0]
    out: dict = {"n_queries": len(use), "n_without_relevant": len(rows) - len(use)}
    out["chance_precision"] = m.mean([m.chance_precision(r[n], r[pool]) for r in use])[0]
    for k in ks:
        out[f"chance_hit_rate@{k}"] = m.mean([m.chance_hit_rate_at_k(r[n], r[pool], k) for r in use])[0]
    for k in ks:
        lists = [(r[rel], r[n]) for r in use]
        out[f"precision@{k}"] = m.mean([m.precision_at_k(x, k) for x, _ in lists])[0]
        out[f"map@{k}"] = m.mean([m.average_precision_at_k(x, k, c) for x, c in lists])[0]
        out[f"hit_rate@{k}"] = m.mean([m.hit_rate_at_k(x, k) for x, _ in lists])[0]
        out[f"mrr@{k}"] = m.mean([m.reciprocal_rank_at_k(x, k) for x, _ in lists])[0]
        out[f"recall@{k}"] = m.mean([m.recall_at_k(x, k, c) for x, c in lists])[0]
    return out


def anatomy_block(rows: Sequence[dict], ks: Sequence[int]) -> dict:
    """Classification accuracy and same-anatomy@k of the unfiltered search."""
    out: dict = {"n_queries": len(rows)}
    out["accuracy"] = m.accuracy([r["predicted"] or "" for r in rows], [r["anatomy"] for r in rows])
    out["chance_same_anatomy"] = m.mean([r["anatomy_share"] for r in rows])[0]
    for k in ks:
        out[f"same_anatomy@{k}"] = m.mean([m.same_label_fraction(r["anatomy"], r["hit_anatomies"], k)
                                           for r in rows])[0]
    return out


def intervals(rows: Sequence[dict], k: int, n_boot: int = 1000) -> dict:
    """95% patient-cluster bootstrap intervals of the headline metrics at ``k``."""
    nan = float("nan")

    def per_query(fn, rel: str | None = None, n: str | None = None, only_abnormal: bool = False) -> list[float]:
        return [nan if (n and r[n] == 0) or (only_abnormal and not r["abnormal"]) else fn(r) for r in rows]

    series = {
        "anatomy.accuracy": per_query(lambda r: float(r["predicted"] == r["anatomy"])),
        f"anatomy.same_anatomy@{k}": per_query(lambda r: m.same_label_fraction(r["anatomy"], r["hit_anatomies"], k)),
        f"findings_all.precision@{k}": per_query(lambda r: m.precision_at_k(r["findings_rel"], k), n="findings_n"),
        f"findings_abnormal.map@{k}": per_query(
            lambda r: m.average_precision_at_k(r["findings_rel"], k, r["findings_n"]), n="findings_n", only_abnormal=True),
        f"findings_abnormal.hit_rate@{k}": per_query(
            lambda r: m.hit_rate_at_k(r["findings_rel"], k), n="findings_n", only_abnormal=True),
        f"same_patient.hit_rate@{k}": per_query(lambda r: m.hit_rate_at_k(r["patient_rel"], k), n="patient_n"),
    }
    clusters = [r["patient"] for r in rows]
    return {name: list(m.cluster_bootstrap_ci(v, clusters, n_boot)) for name, v in series.items()}


def summarize(rows: Sequence[dict], ks: Sequence[int], depth: int) -> dict:
    """Every metric of one model, overall and per anatomy, plus the precision-recall curves."""
    abnormal = [r for r in rows if r["abnormal"]]
    per_anatomy = {}
    for slug in sorted({r["anatomy"] for r in rows}):
        sub = [r for r in rows if r["anatomy"] == slug]
        per_anatomy[slug] = {
            "anatomy": anatomy_block(sub, ks),
            "findings_all": retrieval(sub, "findings_rel", "findings_n", "findings_pool", ks),
            "findings_abnormal": retrieval([r for r in sub if r["abnormal"]], "findings_rel", "findings_n", "findings_pool", ks),
        }
    curves = {}
    for name, sub in (("all", rows), ("abnormal", abnormal)):
        p, rc = m.pr_curve([r["findings_rel"] for r in sub], [r["findings_n"] for r in sub], depth)
        curves[name] = {"k": list(range(1, depth + 1)), "precision": p.tolist(), "recall": rc.tolist()}
    return {
        "anatomy": anatomy_block(rows, ks),
        "findings_all": retrieval(rows, "findings_rel", "findings_n", "findings_pool", ks),
        "findings_abnormal": retrieval(abnormal, "findings_rel", "findings_n", "findings_pool", ks),
        "findings_all_unfiltered": retrieval(rows, "findings_rel_unfiltered", "findings_n", "findings_pool_unfiltered", ks),
        "same_patient": retrieval(rows, "patient_rel", "patient_n", "patient_pool", ks),
        "ann_recall": {f"recall@{k}": m.mean([r["ann_recall"][k] for r in rows])[0] for k in ks},
        "ci95": intervals(rows, max(ks)),
        "per_anatomy": per_anatomy,
        "pr_curve": curves,
    }
