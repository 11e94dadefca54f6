"""Held-out scores of one model, tallied chunk by chunk: accuracy, per anatomy, left/right swaps, P@k.

The held-out split of a large archive does not fit in memory as crops, and its embeddings'
similarity matrix does not fit at all, so nothing here holds a row per crop: predictions go into
a ``(C, C)`` confusion matrix, and precision@k keeps only the embeddings of the crops it scores
(at most ``max_n``) and ranks them with :func:`regionmir.evaluation.metrics.same_label_at_k`, a
block of queries at a time. The numbers are exactly those of scoring everything at once
(``tests/train/test_tally.py`` checks it against the full matrices). Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from regionmir.anatomy import Anatomy
from regionmir.errors import UnknownAnatomyError
from regionmir.evaluation.metrics import same_label_at_k


def scored_rows(n: int, max_n: int) -> np.ndarray:
    """Rows precision@k scores among ``n`` crops: all, or ``max_n`` evenly spaced ones."""
    if n > max_n:
        return np.linspace(0, n - 1, max_n).astype(np.int64)
    return np.arange(n)


def lr_confusions(confusion: np.ndarray, classes: Sequence[Anatomy]) -> list[dict]:
    """Left-vs-right swaps from a ``(C, C)`` confusion matrix (true, predicted): for each lateral
    anatomy, crops predicted as its contralateral twin."""
    pos = {a: i for i, a in enumerate(classes)}
    out = []
    for i, a in enumerate(classes):
        try:
            twin = a.contralateral()
        except UnknownAnatomyError:  # "right atrium": no left twin in the vocabulary
            continue
        if twin is None or twin not in pos:
            continue
        out.append({"true": a.slug, "predicted": twin.slug, "count": int(confusion[i, pos[twin]]),
                    "of": int(confusion[i].sum())})
    return sorted(out, key=lambda r: (-r["count"], r["true"]))


class Tally:
    """Scores of ``n`` held-out crops, fed in order with :meth:`add`; :meth:`result` gives the report dict."""

    def __init__(self, classes: Sequence[Anatomy], n: int, k: int = 10, max_n: int = 8000):
        self.classes, self.n, self.k = tuple(classes), n, k
        self.confusion = np.zeros((len(self.classes), len(self.classes)), np.int64)  # (true, predicted)
        self.keep = scored_rows(n, max_n)  # (M,) rows whose embeddings P@k ranks
        self.emb: np.ndarray | None = None  # (M, D), filled as chunks arrive
        self.kept_labels = np.zeros(len(self.keep), np.int64)  # (M,)
        self.seen = 0

    def add(self, emb: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> None:
        """The next ``len(labels)`` crops: embeddings ``(b, D)``, logits ``(b, C)``, labels ``(b,)``."""
        start, stop = self.seen, self.seen + len(labels)
        if stop > self.n:
            raise ValueError(f"Tally of {self.n} crops was given {stop}")
        np.add.at(self.confusion, (labels, logits.argmax(axis=1)), 1)
        if self.emb is None:
            self.emb = np.zeros((len(self.keep), emb.shape[1]), emb.dtype)
        lo, hi = np.searchsorted(self.keep, [start, stop])
        self.emb[lo:hi] = emb[self.keep[lo:hi] - start]
        self.kept_labels[lo:hi] = labels[self.keep[lo:hi] - start]
        self.seen = stop

    def result(self) -> dict:
        """Accuracy, macro accuracy, left/right swap rate, precision@10, per anatomy and swaps.

        Raises:
            ValueError: fewer crops were added than announced.
        """
        if self.seen != self.n:
            raise ValueError(f"Tally of {self.n} crops was given {self.seen}")
        c, per = self.confusion, {}
        for i, a in enumerate(self.classes):
            if c[i].sum():
                per[a.slug] = {"accuracy": float(c[i, i] / c[i].sum()), "n": int(c[i].sum())}
        swaps = lr_confusions(c, self.classes)
        lateral = sum(r["of"] for r in swaps)
        emb = self.emb if self.emb is not None else np.zeros((0, 1), np.float32)
        return {
            "accuracy": float(np.trace(c) / self.n) if self.n else float("nan"),
            "macro_accuracy": float(np.mean([v["accuracy"] for v in per.values()])),
            "lr_swap_rate": sum(r["count"] for r in swaps) / lateral if lateral else 0.0,
            f"precision_at_{self.k}": same_label_at_k(emb, self.kept_labels, self.k),
            "n": int(self.n),
            "per_anatomy": per,
            "lr_confusions": swaps,
        }
