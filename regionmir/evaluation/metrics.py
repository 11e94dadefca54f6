"""Retrieval and classification metrics: pure numpy on ranked relevance lists, no I/O.

Every ranking metric takes ``relevant``: the hits of ONE query in rank order (best first),
``True`` where the hit is relevant. Conventions, shared by all of them:

* ``k`` cuts the list to its first ``k`` entries. When fewer than ``k`` hits were returned,
  the missing positions count as non-relevant: precision@k always divides by ``k``.
* ``n_relevant`` is the number of relevant items in the whole searched collection (not only
  among the hits). Metrics that need it (AP@k, recall@k) are undefined (``nan``) when it is 0;
  aggregate with :func:`mean` (which skips ``nan``) and report how many queries counted.
* Ties in score are resolved before the metrics see the list: use :func:`rank_order`
  (descending score, then ascending id) so that exact and approximate search, and two runs,
  rank tied hits the same way. :func:`recall_vs_exact` is tie-aware by construction.

Definitions (``rel_i`` = 1 if the hit at rank ``i`` (1-based) is relevant):

* precision@k  = sum_{i<=k} rel_i / k
* hit rate@k   = 1 if any rel_i = 1 for i <= k, else 0
* RR@k         = 1 / (smallest i <= k with rel_i = 1), else 0;  MRR@k = mean over queries
* recall@k     = sum_{i<=k} rel_i / n_relevant
* AP@k         = sum_{i<=k} precision@i * rel_i / min(k, n_relevant);  mAP@k = mean over queries.
  Normalising by ``min(k, n_relevant)`` (common IR practice, e.g. ``apk`` of the Kaggle
  ml_metrics package) makes a perfect top-k score 1 even when the collection holds more than
  ``k`` relevant items, and does not reward a query for having few relevant items.
* same-label fraction@k = precision@k with rel_i = (label of hit i == label of the query).
  :func:`same_label_fraction` scores hits a store returned; :func:`same_label_at_k` ranks raw
  embeddings itself (every crop queries the others, optionally only other patients').
* ANN recall@k vs exact = |{approximate top-k hits scoring >= the exact k-th score - eps}| / k
  (the ann-benchmarks definition; a tie at the k-th place is not counted as a miss).

Chance level: a random ranking of a pool of ``pool`` items holding ``n_relevant`` relevant ones has
expected precision@k = n_relevant / pool (k <= pool) and hit rate@k = 1 - C(pool - n_relevant, k) /
C(pool, k) (:func:`chance_precision`, :func:`chance_hit_rate_at_k`).

Uncertainty: regions of one patient are not independent samples, so :func:`cluster_bootstrap_ci`
resamples whole clusters (patients) to give a percentile interval of a mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "accuracy",
    "average_precision_at_k",
    "chance_hit_rate_at_k",
    "chance_precision",
    "cluster_bootstrap_ci",
    "hit_rate_at_k",
    "mean",
    "pr_curve",
    "precision_at_k",
    "rank_order",
    "recall_at_k",
    "recall_vs_exact",
    "reciprocal_rank_at_k",
    "same_label_at_k",
    "same_label_fraction",
]


def _top(relevant: Sequence[bool] | np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` relevance flags as a bool array (shorter when fewer hits)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return np.asarray(relevant, dtype=bool).reshape(-1)[:k]


def precision_at_k(relevant: Sequence[bool], k: int) -> float:
    """Fraction of the first ``k`` ranks that hold a relevant hit (missing hits count as 0)."""
    return float(_top(relevant, k).sum()) / k


def hit_rate_at_k(relevant: Sequence[bool], k: int) -> float:
    """1.0 if a relevant hit is among the first ``k``, else 0.0 (averaged: hit rate@k)."""
    return float(_top(relevant, k).any())


def reciprocal_rank_at_k(relevant: Sequence[bool], k: int) -> float:
    """``1 / rank`` of the first relevant hit within the first ``k``, else 0.0 (averaged: MRR@k)."""
    top = _top(relevant, k)
    first = np.flatnonzero(top)
    return 1.0 / (first[0] + 1) if first.size else 0.0


def recall_at_k(relevant: Sequence[bool], k: int, n_relevant: int) -> float:
    """Fraction of the collection's ``n_relevant`` relevant items found in the first ``k``.

    Returns ``nan`` when ``n_relevant == 0`` (recall is undefined without relevant items).

    Raises:
        ValueError: the first ``k`` hits hold more relevant items than ``n_relevant``.
    """
    found = int(_top(relevant, k).sum())
    if found > n_relevant:
        raise ValueError(f"{found} relevant hits in the top {k} but n_relevant={n_relevant}")
    return found / n_relevant if n_relevant > 0 else float("nan")


def average_precision_at_k(relevant: Sequence[bool], k: int, n_relevant: int | None = None) -> float:
    """AP@k = sum_{i<=k} precision@i * rel_i / min(k, n_relevant).

    Args:
        relevant: relevance of the hits in rank order.
        k: cut-off.
        n_relevant: relevant items in the searched collection; None means "those in
            ``relevant``" (only right when ``relevant`` lists the whole ranked collection).

    Returns:
        AP@k in [0, 1], or ``nan`` when ``n_relevant == 0``.

    Raises:
        ValueError: the first ``k`` hits hold more relevant items than ``n_relevant``.
    """
    top = _top(relevant, k)
    if n_relevant is None:
        n_relevant = int(np.asarray(relevant, dtype=bool).sum())
    if int(top.sum()) > n_relevant:
        raise ValueError(f"{int(top.sum())} relevant hits in the top {k} but n_relevant={n_relevant}")
    if n_relevant == 0:
        return float("nan")
    ranks = np.arange(1, top.size + 1)  # (k,)
    precision_at_i = np.cumsum(top) / ranks  # (k,)
    return float((precision_at_i * top).sum() / min(k, n_relevant))


def same_label_fraction(query_label: object, hit_labels: Sequence[object], k: int) -> float:
    """Fraction of the first ``k`` hits whose label equals ``query_label`` (precision@k)."""
    return precision_at_k([h == query_label for h in list(hit_labels)[:k]], k)


def same_label_at_k(emb: np.ndarray, labels: Sequence[object], k: int = 10,
                    groups: Sequence[object] | None = None, block: int = 256) -> float:
    """Mean share of each crop's ``k`` nearest other crops that carry its label.

    Every row of ``emb`` queries all the others by dot product (cosine when the rows are
    L2-normalized). A crop is never its own neighbour; with ``groups`` (patient ids), no crop of
    the query's own group is either. A query whose pool holds fewer than ``k`` crops is scored on
    its whole pool; a query with an empty pool is skipped. Ties in similarity go to the lower row
    index (as :func:`rank_order` breaks ties by id), so the score never depends on sort internals.
    Queries are ranked ``block`` at a time against all rows (memory ``block x N``, never ``N x N``).

    Args:
        emb: ``(N, D)`` embeddings.
        labels: ``(N,)`` label per row (anatomy index or slug).
        k: neighbours per query.
        groups: ``(N,)`` group per row; None excludes only the query itself.
        block: queries ranked at once; it changes memory and speed, never the result.

    Returns:
        The mean over scored queries, rounded once from the exact fraction (so block size and
        order never change a digit); ``nan`` when no query has a neighbour.

    Raises:
        ValueError: ``k < 1``, or ``labels``/``groups`` differ in length from ``emb``.
    """
    emb, lab = np.asarray(emb), np.asarray(labels)
    if not np.issubdtype(emb.dtype, np.floating):
        emb = emb.astype(np.float64)  # -inf marks rows outside a pool
    grp = None if groups is None else np.asarray(groups)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(lab) != len(emb) or (grp is not None and len(grp) != len(emb)):
        raise ValueError(f"{len(emb)} embeddings but {len(lab)} labels"
                         + ("" if grp is None else f" and {len(grp)} groups"))
    hits, taken = np.zeros(len(emb), np.int64), np.zeros(len(emb), np.int64)  # (N,), (N,)
    for start in range(0, len(emb), block):
        rows = np.arange(start, min(start + block, len(emb)))  # (b,)
        pool = np.ones((rows.size, len(emb)), bool)  # (b, N) whom each query may rank
        pool[np.arange(rows.size), rows] = False
        if grp is not None:
            pool &= grp[rows, None] != grp[None, :]
        chosen = _top_k_in_pool(emb[rows] @ emb.T, pool, k)  # (b, N)
        hits[rows] = (chosen & (lab[rows, None] == lab[None, :])).sum(axis=1)
        taken[rows] = chosen.sum(axis=1)
    return _exact_mean_share(hits, taken)


def _top_k_in_pool(sim: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """``(b, N)`` mask of each row's ``min(k, pool size)`` most similar pool members, ties to the lower index."""
    sim[~pool] = -np.inf  # (b, N)
    j = min(k, sim.shape[1]) - 1
    kth = -np.partition(-sim, j, axis=1)[:, j]  # (b,) the k-th largest similarity (-inf: pool < k)
    above = sim > kth[:, None]  # (b, N) surely in the top k
    tied = (sim == kth[:, None]) & pool  # (b, N) at the cut: take the lowest indexes that fit
    room = np.minimum(k, pool.sum(axis=1)) - above.sum(axis=1)  # (b,)
    return above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))


def _exact_mean_share(hits: np.ndarray, taken: np.ndarray) -> float:
    """Mean of ``hits / taken`` over rows with ``taken > 0``, summed as a fraction and rounded once."""
    scored = taken > 0
    if not scored.any():
        return float("nan")
    total = sum((Fraction(int(hits[taken == t].sum()), int(t)) for t in np.unique(taken[scored])), Fraction(0))
    return float(total / int(scored.sum()))


def recall_vs_exact(approx_scores: Sequence[float], exact_scores: Sequence[float], k: int,
                    eps: float = 1e-6) -> float:
    """Recall@k of an approximate (ANN) search against the exact search of the same query.

    Scores are similarities (higher is closer). An approximate hit counts when it scores at
    least the exact ``k``-th score minus ``eps``, so hits tied with the ``k``-th exact one are
    not misses (ann-benchmarks' definition). With fewer than ``k`` exact hits the divisor is
    the number of exact hits.

    Returns:
        Recall in [0, 1]; ``nan`` when the exact search returned nothing.
    """
    exact = np.sort(np.asarray(exact_scores, dtype=np.float64))[::-1][:k]
    if exact.size == 0:
        return float("nan")
    approx = np.asarray(approx_scores, dtype=np.float64)[:k]
    return min(1.0, float((approx >= exact[-1] - eps).sum()) / exact.size)


def rank_order(scores: Sequence[float], ids: Sequence[str]) -> np.ndarray:
    """Indexes that sort hits by descending score, ties broken by ascending id.

    Returns:
        ``(n,)`` int array; ``[hits[i] for i in rank_order(...)]`` is the ranked list.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[0] != len(ids):
        raise ValueError(f"{scores.shape[0]} scores but {len(ids)} ids")
    id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=str), kind="stable"), kind="stable")
    return np.lexsort((id_rank, -scores))


def accuracy(predicted: Sequence[int], truth: Sequence[int]) -> float:
    """Fraction of ``predicted == truth``; ``nan`` for empty input.

    Raises:
        ValueError: the two sequences differ in length.
    """
    p, t = np.asarray(predicted), np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"{p.shape[0]} predictions but {t.shape[0]} labels")
    return float((p == t).mean()) if p.size else float("nan")


def pr_curve(relevant_lists: Sequence[Sequence[bool]], n_relevant: Sequence[int],
             max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision@k and mean recall@k for k = 1..max_k (queries with n_relevant = 0 skipped).

    Returns:
        ``(precision, recall)``, each ``(max_k,)``; all ``nan`` when no query counts.
    """
    rows = [(r, n) for r, n in zip(relevant_lists, n_relevant) if n > 0]
    precision = np.full(max_k, np.nan)
    recall = np.full(max_k, np.nan)
    if not rows:
        return precision, recall
    hits = np.zeros((len(rows), max_k), dtype=np.float64)  # (queries, max_k)
    for q, (r, _) in enumerate(rows):
        top = _top(r, max_k)
        hits[q, : top.size] = top
    found = np.cumsum(hits, axis=1)  # (queries, max_k) relevant within the first k
    ks = np.arange(1, max_k + 1)
    precision = (found / ks).mean(axis=0)
    recall = (found / np.array([n for _, n in rows], dtype=np.float64)[:, None]).mean(axis=0)
    return precision, recall


def mean(values: Sequence[float]) -> tuple[float, int]:
    """Mean over the values that are not ``nan``, and how many there were (``(nan, 0)`` if none)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    return (float(v.mean()), int(v.size)) if v.size else (float("nan"), 0)


def cluster_bootstrap_ci(values: Sequence[float], clusters: Sequence[object], n_boot: int = 1000,
                         level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` when whole ``clusters`` are resampled.

    Each bootstrap sample draws as many clusters as there are, with replacement, and takes the
    mean over all their values (``nan`` values are ignored, as in :func:`mean`).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when no value counts.

    Raises:
        ValueError: ``values`` and ``clusters`` differ in length.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size != len(clusters):
        raise ValueError(f"{v.size} values but {len(clusters)} cluster labels")
    keep = ~np.isnan(v)
    if not keep.any():
        return float("nan"), float("nan")
    _, group = np.unique(np.asarray([str(c) for c in clusters], dtype=str)[keep], return_inverse=True)
    sums = np.bincount(group, weights=v[keep])  # (G,)
    counts = np.bincount(group).astype(np.float64)  # (G,)
    draw = np.random.default_rng(seed).integers(0, sums.size, size=(n_boot, sums.size))  # (n_boot, G)
    stats = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)  # (n_boot,)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def chance_precision(n_relevant: int, pool: int) -> float:
    """Expected precision@k (k <= pool) of a random ranking: ``n_relevant / pool``; nan for an empty pool."""
    return n_relevant / pool if pool > 0 else float("nan")


def chance_hit_rate_at_k(n_relevant: int, pool: int, k: int) -> float:
    """Probability that ``k`` items drawn at random from ``pool`` include one of ``n_relevant``.

    Returns:
        ``1 - prod_{i<k} (pool - n_relevant - i) / (pool - i)``; nan for an empty pool.
    """
    if pool <= 0:
        return float("nan")
    k = min(k, pool)
    i = np.arange(k)
    miss = np.prod(np.clip(pool - n_relevant - i, 0, None) / (pool - i))
    return float(1.0 - miss)
