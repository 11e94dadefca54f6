"""Metrics against hand-computed values and a slow, obvious reference."""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import mean

import numpy as np
import pytest

from regionmir.evaluation import metrics as m

# Ranked list used by several hand computations: relevant at ranks 1, 3 and 6.
R = [1, 0, 1, 0, 0, 1, 0, 0, 0, 0]


def test_precision_hand_computed():
    assert m.precision_at_k(R, 1) == 1.0
    assert m.precision_at_k(R, 3) == pytest.approx(2 / 3)
    assert m.precision_at_k(R, 5) == pytest.approx(2 / 5)
    assert m.precision_at_k(R, 10) == pytest.approx(3 / 10)


def test_hit_rate_and_reciprocal_rank_hand_computed():
    late = [0, 0, 0, 1]
    assert m.hit_rate_at_k(late, 3) == 0.0
    assert m.hit_rate_at_k(late, 4) == 1.0
    assert m.reciprocal_rank_at_k(late, 3) == 0.0
    assert m.reciprocal_rank_at_k(late, 4) == 0.25
    assert m.reciprocal_rank_at_k(R, 10) == 1.0
    assert m.reciprocal_rank_at_k([0, 1, 1], 10) == 0.5


def test_average_precision_hand_computed():
    # k=10, 3 relevant in collection: (1/1 + 2/3 + 3/6) / min(10, 3) = 13/18
    assert m.average_precision_at_k(R, 10, n_relevant=3) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    # k=5, 3 relevant: only ranks 1 and 3 count, divided by min(5, 3) = 3
    assert m.average_precision_at_k(R, 5, n_relevant=3) == pytest.approx((1 + 2 / 3) / 3)
    # k=3 with 20 relevant in the collection: divisor min(3, 20) = 3
    assert m.average_precision_at_k(R, 3, n_relevant=20) == pytest.approx((1 + 2 / 3) / 3)
    # a perfect top-k is 1 even when the collection holds more relevant items than k
    assert m.average_precision_at_k([1, 1, 1, 0], 3, n_relevant=50) == 1.0
    # n_relevant omitted: the relevant items of the list itself
    assert m.average_precision_at_k([0, 1], 2) == pytest.approx(0.5)


def test_recall_hand_computed():
    assert m.recall_at_k(R, 3, n_relevant=4) == pytest.approx(2 / 4)
    assert m.recall_at_k(R, 10, n_relevant=3) == 1.0


def test_no_relevant_items():
    none = [0, 0, 0]
    assert m.precision_at_k(none, 3) == 0.0
    assert m.hit_rate_at_k(none, 3) == 0.0
    assert m.reciprocal_rank_at_k(none, 3) == 0.0
    assert math.isnan(m.average_precision_at_k(none, 3, n_relevant=0))
    assert math.isnan(m.recall_at_k(none, 3, n_relevant=0))
    assert m.average_precision_at_k(none, 3, n_relevant=5) == 0.0
    assert m.precision_at_k([], 5) == 0.0
    assert m.reciprocal_rank_at_k([], 5) == 0.0


def test_k_larger_than_list():
    short = [1, 1]
    assert m.precision_at_k(short, 5) == pytest.approx(2 / 5)  # missing hits count as misses
    assert m.hit_rate_at_k(short, 5) == 1.0
    assert m.average_precision_at_k(short, 5, n_relevant=2) == 1.0
    assert m.average_precision_at_k(short, 5, n_relevant=4) == pytest.approx(2 / 4)
    assert m.same_label_fraction("a", ["a", "b"], 4) == pytest.approx(1 / 4)


def test_inconsistent_counts_and_bad_k_raise():
    with pytest.raises(ValueError, match="n_relevant=1"):
        m.average_precision_at_k([1, 1], 2, n_relevant=1)
    with pytest.raises(ValueError, match="n_relevant=0"):
        m.recall_at_k([1], 1, n_relevant=0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.precision_at_k([1], 0)
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        m.accuracy([1, 2], [1])


def test_same_label_fraction():
    labels = ["lung", "lung", "spine", "lung", "heart"]
    assert m.same_label_fraction("lung", labels, 1) == 1.0
    assert m.same_label_fraction("lung", labels, 5) == pytest.approx(3 / 5)
    assert m.same_label_fraction("aorta", labels, 5) == 0.0


def test_rank_order_breaks_ties_by_id():
    scores = [0.5, 0.9, 0.5, 0.9, 0.1]
    ids = ["d", "z", "a", "b", "c"]
    order = m.rank_order(scores, ids)
    assert [ids[i] for i in order] == ["b", "z", "a", "d", "c"]
    # the same hits in another arrival order rank identically
    perm = [4, 2, 0, 3, 1]
    order2 = m.rank_order([scores[i] for i in perm], [ids[i] for i in perm])
    assert [ids[perm[i]] for i in order2] == ["b", "z", "a", "d", "c"]


def test_ties_change_rank_metrics_only_through_order():
    # two tied hits, one relevant: the order decides precision@1, and rank_order fixes the order
    ids, scores, rel = ["b", "a"], [0.7, 0.7], {"a": True, "b": False}
    ranked = [rel[ids[i]] for i in m.rank_order(scores, ids)]
    assert ranked == [True, False]
    assert m.precision_at_k(ranked, 1) == 1.0
    assert m.precision_at_k(ranked, 2) == 0.5  # the cut below the tie sees both


def test_recall_vs_exact_with_ties():
    exact = [0.9, 0.8, 0.7, 0.7]
    assert m.recall_vs_exact([0.9, 0.8, 0.7], exact, 3) == 1.0
    # the ANN found the other hit tied at the 3rd place: not a miss
    assert m.recall_vs_exact([0.9, 0.7, 0.7], exact, 3) == 1.0
    assert m.recall_vs_exact([0.9, 0.8, 0.6], exact, 3) == pytest.approx(2 / 3)
    assert m.recall_vs_exact([0.5], exact, 3) == 0.0
    assert m.recall_vs_exact([0.9], [0.9], 3) == 1.0  # fewer exact hits than k
    assert math.isnan(m.recall_vs_exact([], [], 3))


def test_accuracy_and_mean():
    assert m.accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    assert math.isnan(m.accuracy([], []))
    assert m.mean([1.0, float("nan"), 0.0]) == (0.5, 2)
    value, n = m.mean([float("nan")])
    assert math.isnan(value) and n == 0


def test_pr_curve_hand_computed():
    lists = [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    precision, recall = m.pr_curve(lists, [2, 1, 0], max_k=3)  # third query skipped (no relevant)
    np.testing.assert_allclose(precision, [(1 + 0) / 2, (1 / 2 + 1 / 2) / 2, (2 / 3 + 1 / 3) / 2])
    np.testing.assert_allclose(recall, [(1 / 2 + 0) / 2, (1 / 2 + 1) / 2, (1 + 1) / 2])
    p, r = m.pr_curve([[0]], [0], max_k=2)
    assert np.isnan(p).all() and np.isnan(r).all()


def _slow_ap(rel, k, n_rel):
    """Textbook loop: average of precision at each relevant rank within k."""
    total, seen = 0.0, 0
    for i in range(min(k, len(rel))):
        if rel[i]:
            seen += 1
            total += seen / (i + 1)
    return total / min(k, n_rel)


def test_against_slow_reference_on_random_lists():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 15))
        rel = (rng.random(n) < 0.4).tolist()
        k = int(rng.integers(1, 20))
        n_rel = sum(rel) + int(rng.integers(0, 5))
        top = rel[:k]
        assert m.precision_at_k(rel, k) == pytest.approx(sum(top) / k)
        assert m.hit_rate_at_k(rel, k) == float(any(top))
        first = next((i for i, r in enumerate(top) if r), None)
        assert m.reciprocal_rank_at_k(rel, k) == (0.0 if first is None else 1 / (first + 1))
        if n_rel:
            assert m.average_precision_at_k(rel, k, n_rel) == pytest.approx(_slow_ap(rel, k, n_rel))
            assert m.recall_at_k(rel, k, n_rel) == pytest.approx(sum(top) / n_rel)
            # hit rate bounds precision and AP from above
            assert m.hit_rate_at_k(rel, k) >= m.precision_at_k(rel, k)
            assert m.hit_rate_at_k(rel, k) >= m.average_precision_at_k(rel, k, n_rel)


def test_cluster_bootstrap_ci():
    # constant values: the interval collapses onto the value
    assert m.cluster_bootstrap_ci([0.5] * 6, list("aabbcc")) == (0.5, 0.5)
    # one cluster: every resample is the same cluster
    assert m.cluster_bootstrap_ci([0.0, 1.0, 1.0], ["p"] * 3) == pytest.approx((2 / 3, 2 / 3))
    # nan values are ignored, like metrics.mean
    assert m.cluster_bootstrap_ci([1.0, float("nan")], ["a", "b"]) == (1.0, 1.0)
    assert all(math.isnan(x) for x in m.cluster_bootstrap_ci([float("nan")], ["a"]))
    with pytest.raises(ValueError, match="2 values but 1 cluster"):
        m.cluster_bootstrap_ci([1.0, 2.0], ["a"])
    # clusters that agree internally: the interval is as wide as resampling 2 coins, not 200
    values = [1.0] * 100 + [0.0] * 100
    clustered = m.cluster_bootstrap_ci(values, ["a"] * 100 + ["b"] * 100, seed=1)
    independent = m.cluster_bootstrap_ci(values, list(range(200)), seed=1)
    low, high = independent
    assert low < 0.5 < high and high - low < 0.2
    assert clustered[1] - clustered[0] > 0.9  # only means 0, 0.5, 1 are possible
    assert m.cluster_bootstrap_ci(values, list(range(200)), seed=1) == independent  # seeded


def test_chance_levels():
    assert m.chance_precision(1, 4) == 0.25
    assert math.isnan(m.chance_precision(0, 0))
    assert m.chance_hit_rate_at_k(1, 4, 2) == pytest.approx(1 - (3 / 4) * (2 / 3))  # 0.5
    assert m.chance_hit_rate_at_k(0, 4, 3) == 0.0
    assert m.chance_hit_rate_at_k(2, 4, 3) == 1.0  # 3 draws from 4 cannot miss both
    assert m.chance_hit_rate_at_k(1, 3, 10) == 1.0  # k larger than the pool
    # against simulation
    rng = np.random.default_rng(0)
    sims = [np.isin(rng.permutation(20)[:5], [0, 1, 2]).any() for _ in range(20000)]
    assert m.chance_hit_rate_at_k(3, 20, 5) == pytest.approx(np.mean(sims), abs=0.01)


def _slow_same_label(emb, labels, k, groups=None):
    """Each crop ranks every other crop (of another group) by dot product, ties by lower index."""
    shares = []
    for i in range(len(emb)):
        pool = [j for j in range(len(emb)) if j != i and (groups is None or groups[j] != groups[i])]
        top = sorted(pool, key=lambda j: (-float(np.dot(emb[i], emb[j])), j))[:k]
        if top:
            shares.append(Fraction(sum(labels[j] == labels[i] for j in top), len(top)))
    return float(mean(shares)) if shares else float("nan")


@pytest.mark.parametrize("with_groups", [False, True])
def test_same_label_at_k_against_a_slow_loop(with_groups):
    rng = np.random.default_rng(3)
    for _ in range(150):
        n = int(rng.integers(0, 30))
        emb = rng.integers(-2, 3, size=(n, 3)).astype(np.float32)  # small integers: exact sums, many ties
        labels = rng.choice(["a", "b", "c"], n).tolist()
        groups = rng.integers(0, max(1, n // 3), n).tolist() if with_groups else None
        k = int(rng.integers(1, n + 6))  # up to beyond the pool
        want = _slow_same_label(emb, labels, k, groups)
        for block in (1, 4, 256):
            got = m.same_label_at_k(emb, labels, k, groups=groups, block=block)
            assert got == want or (math.isnan(got) and math.isnan(want)), (n, k, block)


def test_same_label_at_k_hand_counts():
    emb = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.141, 0.99]], np.float32)
    assert m.same_label_at_k(emb, [0, 0, 1, 1], k=1) == 1.0
    assert m.same_label_at_k(emb, [0, 1, 0, 1], k=1) == 0.0  # each nearest neighbour has the other label
    assert m.same_label_at_k(emb, [0, 0, 1, 1], k=3) == pytest.approx(1 / 3)  # k beyond the pool: all 3 others
    assert math.isnan(m.same_label_at_k(emb[:1], [0], k=1))  # nobody to rank
    clusters = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]]
    assert m.same_label_at_k(clusters, list("aabb"), 1, groups=["p1", "p2", "p3", "p4"]) == 1.0
    # the only same-label neighbour is the same patient: it must not be used
    assert m.same_label_at_k(clusters, list("aabb"), 1, groups=["p1", "p1", "p3", "p3"]) == 0.0
    # crops 0-2 may rank only crop 3 (pool of 1 < k); crop 3 takes crop 2, then crop 0 (tied with 1)
    assert m.same_label_at_k(clusters, list("aabb"), 2, groups=["p1", "p1", "p1", "p2"]) == (0 + 0 + 1 + 1 / 2) / 4
    assert math.isnan(m.same_label_at_k(clusters, list("aabb"), 2, groups=["p"] * 4))  # nobody to rank


def test_same_label_at_k_breaks_ties_by_lower_index():
    tied = np.ones((3, 2), np.float32)  # every crop equally close to every other
    # k=1: crop 0 takes crop 1 (b), crop 1 takes crop 0 (a), crop 2 takes crop 0 (a)
    assert m.same_label_at_k(tied, ["a", "b", "a"], 1) == pytest.approx(1 / 3)
    assert m.same_label_at_k(tied, ["b", "a", "a"], 1) == 0.0  # a bug taking the last tied one would give 2/3
    assert m.same_label_at_k(tied, ["a", "a", "b"], 1) == pytest.approx(2 / 3)


def test_same_label_at_k_blocks_do_not_change_a_digit():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 600)
    emb = (rng.normal(size=(6, 16))[labels] + rng.normal(scale=1.5, size=(600, 16))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    groups = rng.integers(0, 150, 600)
    for g in (None, groups):
        whole = m.same_label_at_k(emb, labels, 10, groups=g, block=600)
        assert [m.same_label_at_k(emb, labels, 10, groups=g, block=b) for b in (1, 7, 256)] == [whole] * 3
        assert 0.3 < whole < 1.0  # neither random nor trivial
    shuffled = m.same_label_at_k(emb, rng.permutation(labels), 10)
    assert shuffled < 0.25  # chance is about 1/6: a label bug would not pass


def test_same_label_at_k_refuses_bad_input():
    emb = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.same_label_at_k(emb, [0, 1, 2], 0)
    with pytest.raises(ValueError, match="3 embeddings but 2 labels"):
        m.same_label_at_k(emb, [0, 1], 1)
    with pytest.raises(ValueError, match="3 labels and 4 groups"):
        m.same_label_at_k(emb, [0, 1, 2], 1, groups=[0, 0, 1, 1])
