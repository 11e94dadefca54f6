"""Tally, fed chunk by chunk, gives exactly the scores of the whole-split computation (full similarity matrix)."""

from __future__ import annotations

import numpy as np
import pytest

from regionmir.anatomy import Anatomy
from regionmir.train.tally import Tally, scored_rows

CLASSES = (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG, Anatomy.SPINE, Anatomy.RIGHT_CLAVICLE, Anatomy.LEFT_CLAVICLE,
           Anatomy.TRACHEA)


def _full_precision(emb, labels, k, max_n):
    """The old, obvious way: one (N, N) similarity matrix of the evenly spaced subset.

    (The ranking itself, metrics.same_label_at_k, is tested against a slow loop in test_metrics.py.)"""
    keep = scored_rows(len(emb), max_n)
    emb, labels = emb[keep], labels[keep]
    k = min(k, len(emb) - 1)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return float((labels[top] == labels[:, None]).mean())


def _full(logits, emb, labels, k=10, max_n=8000):
    """Every score from whole arrays, written out plainly."""
    pred = logits.argmax(1)
    per = {}
    for i, a in enumerate(CLASSES):
        mask = labels == i
        if mask.any():
            per[a.slug] = {"accuracy": float((pred[mask] == i).mean()), "n": int(mask.sum())}
    swaps = []
    for i, a in enumerate(CLASSES):
        twin = a.contralateral()
        if twin in CLASSES:
            mask = labels == i
            swapped = int((pred[mask] == CLASSES.index(twin)).sum())
            swaps.append({"true": a.slug, "predicted": twin.slug, "count": swapped, "of": int(mask.sum())})
    swaps.sort(key=lambda r: (-r["count"], r["true"]))
    lateral = sum(r["of"] for r in swaps)
    return {"accuracy": float((pred == labels).mean()),
            "macro_accuracy": float(np.mean([v["accuracy"] for v in per.values()])),
            "lr_swap_rate": sum(r["count"] for r in swaps) / lateral if lateral else 0.0,
            "precision_at_10": _full_precision(emb, labels, k, max_n), "n": len(labels), "per_anatomy": per,
            "lr_confusions": swaps}


def _data(n, seed=0, d=16):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    centres = rng.normal(size=(len(CLASSES), d))
    emb = (centres[labels] + rng.normal(scale=1.5, size=(n, d))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    logits = (np.eye(len(CLASSES))[labels] * 2 + rng.normal(size=(n, len(CLASSES)))).astype(np.float32)
    return logits, emb, labels


@pytest.mark.parametrize("n, chunk, max_n", [(500, 64, 8000), (500, 500, 8000), (777, 100, 300), (13, 5, 8000)])
def test_chunked_tally_equals_the_full_computation(n, chunk, max_n):
    logits, emb, labels = _data(n)
    tally = Tally(CLASSES, n, max_n=max_n)
    for s in range(0, n, chunk):
        tally.add(emb[s : s + chunk], logits[s : s + chunk], labels[s : s + chunk])
    got, want = tally.result(), _full(logits, emb, labels, max_n=max_n)
    assert got == want  # exact, not approximate: the same numbers as scoring everything at once
    if n >= 100:  # the data is neither random nor trivial
        assert 0.3 < got["precision_at_10"] < 1.0 and 0.5 < got["accuracy"] < 1.0


def test_left_right_swaps_come_from_the_confusions():
    labels = np.array([0, 0, 0, 1, 2])  # right lung x3, left lung, spine
    logits = np.eye(len(CLASSES), dtype=np.float32)[[1, 1, 0, 1, 2]]  # two right lungs called left
    tally = Tally(CLASSES, 5)
    tally.add(np.eye(5, 4, dtype=np.float32), logits, labels)
    r = tally.result()
    assert r["lr_confusions"][0] == {"true": "right-lung", "predicted": "left-lung", "count": 2, "of": 3}
    assert r["lr_swap_rate"] == 2 / 4 and r["accuracy"] == 3 / 5
    assert r["per_anatomy"]["right-lung"] == {"accuracy": 1 / 3, "n": 3}


def test_a_short_tally_refuses_to_score():
    logits, emb, labels = _data(10)
    tally = Tally(CLASSES, 10)
    tally.add(emb[:4], logits[:4], labels[:4])
    with pytest.raises(ValueError, match="10 crops was given 4"):
        tally.result()
    with pytest.raises(ValueError, match="given 14"):
        tally.add(emb, logits, labels)
