"""Retrieval among real crops, pooled by patient: findings, same anatomy per region, enlarged hearts.

Every query ranks the crops of all *other* patients by cosine (rows are L2-normalized); a
patient's own crops are never candidates. Chance is the share of relevant crops in the query's
pool, averaged over queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from regionmir.evaluation import metrics


def findings_retrieval(emb: np.ndarray, findings: Sequence[str], groups: Sequence[str], k: int = 10,
                       queries: Sequence[bool] | None = None, candidates: Sequence[bool] | None = None) -> dict:
    """Label retrieval among crops of one anatomy: relevant = same label as the query.

    Args:
        emb: ``(N, D)`` L2-normalized embeddings.
        findings: ``(N,)`` label per crop.
        groups: ``(N,)`` patient key per crop.
        k: cut-off.
        queries: ``(N,)`` bool, the crops that query (default: all).
        candidates: ``(N,)`` bool, the crops a query may find (default: all); a payload filter.

    Returns:
        ``precision@k``, ``map@k``, ``hit_rate@k``, ``chance_precision``, ``chance_hit_rate@k``
        (means over queries with a non-empty pool; nan without any) and ``queries``.
    """
    n = len(findings)
    sims = emb @ emb.T  # (N, N)
    g, f = np.asarray(groups), np.asarray(findings)
    q = np.ones(n, bool) if queries is None else np.asarray(queries, bool)
    c = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool)
    p, ap, hr, cp, chr_ = [], [], [], [], []
    for i in np.flatnonzero(q):
        pool = np.flatnonzero((g != g[i]) & c)
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
    m = lambda v: float(np.mean(v)) if v else float("nan")
    return {f"precision@{k}": m(p), f"map@{k}": m(ap), f"hit_rate@{k}": m(hr),
            "chance_precision": m(cp), f"chance_hit_rate@{k}": m(chr_), "queries": len(p)}


def same_label_share(emb: np.ndarray, labels: Sequence[str], groups: Sequence[str], label: str, k: int = 10) -> float:
    """Mean share of the ``k`` nearest other-patient crops that carry ``label``, over the crops of
    ``label`` (same-anatomy@k for one region, e.g. heart crops among heart and lung crops).

    Ties go to the lower row, as :func:`regionmir.evaluation.metrics.same_label_at_k` breaks
    them; a pool smaller than ``k`` is scored whole. Returns nan when no query has a pool.
    """
    sims = emb @ emb.T  # (N, N)
    g, lab = np.asarray(groups), np.asarray(labels)
    shares = []
    for i in np.flatnonzero(lab == label):
        pool = np.flatnonzero(g != g[i])
        if pool.size == 0:
            continue
        top = pool[np.argsort(-sims[i, pool], kind="stable")[:k]]
        shares.append(float(np.mean(lab[top] == label)))
    return float(np.mean(shares)) if shares else float("nan")


def enlarged_retrieval(emb: np.ndarray, ctr_true: Sequence[float], ctr_predicted: Sequence[float],
                       groups: Sequence[str], k: int = 10, threshold: float = 0.5) -> dict:
    """Heart crops of enlarged hearts (true CTR > ``threshold``) query the other patients' heart
    crops; relevant = enlarged too. Scored twice: by the embedding alone, and with the CTR filter,
    which keeps only candidates whose CTR from the *predicted* boxes is on the query's side of the
    threshold (every query is enlarged, so: predicted CTR > threshold; what ``--where ctr>0.5``
    will do on stored payloads).

    Args:
        emb: ``(N, D)`` L2-normalized embeddings of heart crops.
        ctr_true: ``(N,)`` the true CTR (nan: unknown; such crops neither query nor count).
        ctr_predicted: ``(N,)`` CTR from the localizer's boxes (nan: no prediction, filtered out).
        groups: ``(N,)`` patient keys.

    Returns:
        ``{"enlarged": n, "heart_crops": n, "embedding": {...}, "ctr_filter": {...}}`` with the
        keys of :func:`findings_retrieval`; ``ctr_filter`` also has ``pool_share`` (the share of
        known crops the filter lets through).
    """
    t, pr = np.asarray(ctr_true, float), np.asarray(ctr_predicted, float)
    known = ~np.isnan(t)
    label = np.where(t > threshold, "enlarged", "normal")
    enlarged = known & (t > threshold)
    with np.errstate(invalid="ignore"):
        side = known & (pr > threshold)  # nan compares False: filtered out
    out = {"enlarged": int(enlarged.sum()), "heart_crops": int(known.sum()),
           "embedding": findings_retrieval(emb, label, groups, k, queries=enlarged, candidates=known),
           "ctr_filter": findings_retrieval(emb, label, groups, k, queries=enlarged, candidates=side)}
    out["ctr_filter"]["pool_share"] = float(side.sum() / known.sum()) if known.any() else float("nan")
    return out
