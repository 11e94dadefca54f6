"""The cardiothoracic ratio (CTR) from boxes, defined once, and how far predicted CTRs are from true ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from regionmir.regions import ENLARGED, cardiothoracic_ratio

# defined once, on the ground floor (the ingest stores it in payloads), and re-exported here
__all__ = ["ENLARGED", "cardiothoracic_ratio", "ctr_errors"]


def ctr_errors(predicted: Sequence[float | None], masks: Sequence[float | None], given: Sequence[float | None]) -> dict:
    """Mean absolute CTR errors over the films where both sides are known.

    Args:
        predicted: per film, the CTR from the localizer's boxes (None: unknown).
        masks: per film, the CTR from the human masks' boxes.
        given: per film, the source's own CTR (``ctr`` in films.csv).

    Returns:
        ``mae_predicted_vs_masks``, ``mae_predicted_vs_given``, ``mae_masks_vs_given`` with their
        ``n_*`` counts, and ``agreement_enlarged`` (share of films where predicted and mask CTR
        fall on the same side of 0.5); nan where no film has both.
    """
    def pair(a, b):
        both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
        return np.asarray(both, float).reshape(-1, 2)

    out = {}
    for name, a, b in (("predicted_vs_masks", predicted, masks), ("predicted_vs_given", predicted, given),
                       ("masks_vs_given", masks, given)):
        ab = pair(a, b)
        out[f"n_{name}"] = len(ab)
        out[f"mae_{name}"] = float(np.abs(ab[:, 0] - ab[:, 1]).mean()) if len(ab) else float("nan")
    pm = pair(predicted, masks)
    out["agreement_enlarged"] = float(np.mean((pm[:, 0] > ENLARGED) == (pm[:, 1] > ENLARGED))) if len(pm) else float("nan")
    return out
