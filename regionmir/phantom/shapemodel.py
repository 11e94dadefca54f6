"""The statistical shape model of the lungs and heart (PCA of real contour landmarks), for phantoms.

Fitted by ``scripts/fit_shape_model.py`` on the Shenzhen, Montgomery and PadChest contours of the
Chest-xray-landmark-dataset (no JSRT); ``data/shape_model.npz`` holds only the mean shapes, the
modes and their standard deviations (a few KB). Shapes are in lung units: x toward the patient's
LEFT from the midline, y down from the apices, mean apex-to-base height 1 (as ``phantom.body``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

MODEL_FILE = Path(__file__).with_name("data") / "shape_model.npz"
CLIP_SD = 2.5  # mode scores are drawn from N(0, 1) and clipped here: no implausible outliers


@dataclass(frozen=True)
class Shapes:
    """One sampled patient: right lung, left lung and heart outlines ``(N, 2)`` in lung units."""

    right_lung: np.ndarray  # 44 points, closed contour
    left_lung: np.ndarray  # 50 points
    heart: np.ndarray  # 26 points


@lru_cache(maxsize=2)
def load(path: str | Path = MODEL_FILE) -> dict[str, np.ndarray]:
    """The fitted model's arrays (cached)."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def n_modes() -> int:
    """How many lung modes the model has (the length of a lung score vector)."""
    return len(load()["lung_sd"])


def sample_scores(rng: np.random.Generator) -> tuple[float, ...]:
    """Lung and heart mode scores (in standard deviations), clipped to +-CLIP_SD."""
    m = load()
    k = len(m["lung_sd"]) + len(m["heart_sd"])
    return tuple(float(v) for v in np.clip(rng.standard_normal(k), -CLIP_SD, CLIP_SD))


def shapes(scores: tuple[float, ...] | np.ndarray) -> Shapes:
    """Outlines for ``scores`` (all zeros: the mean shapes).

    The heart is predicted from the lung scores (linear regression fitted on PadChest) plus its
    own residual modes, so heart and lungs stay anatomically consistent.
    """
    m = load()
    s = np.asarray(scores, np.float64)
    k = len(m["lung_sd"])
    b, hb = s[:k], s[k:]
    lungs = (m["lung_mean"] + (b * m["lung_sd"]) @ m["lung_modes"]).reshape(-1, 2)
    nr = int(m["n_right"])
    heart = np.concatenate([[1.0], b]) @ m["heart_coef"] + (hb * m["heart_sd"]) @ m["heart_modes"]
    return Shapes(lungs[:nr], lungs[nr:], heart.reshape(-1, 2))


def framing(rng: np.random.Generator) -> tuple[float, float, float]:
    """Where the lungs sit on a real film: (apex y, apex-to-base height, midline x) as fractions
    of the film height (x of its width), drawn from the fitted framing statistics."""
    m = load()
    y0, L, x0, _ = rng.multivariate_normal(m["frame_mean"], m["frame_cov"])
    return float(np.clip(y0, 0.05, 0.25)), float(np.clip(L, 0.5, 0.8)), float(np.clip(x0, 0.42, 0.58))


def _crossings(outline: np.ndarray, at: np.ndarray, axis: int) -> list[np.ndarray]:
    """For each value of ``at``, the other coordinate where the closed outline crosses the line
    ``coord[axis] == value`` (empty when it does not)."""
    p0, p1 = outline, np.roll(outline, -1, axis=0)
    a0, a1 = p0[:, axis], p1[:, axis]
    out = []
    for v in np.atleast_1d(at):
        sel = (np.minimum(a0, a1) <= v) & (np.maximum(a0, a1) >= v) & (a0 != a1)
        t = (v - a0[sel]) / (a1[sel] - a0[sel])
        out.append(p0[sel, 1 - axis] + t * (p1[sel, 1 - axis] - p0[sel, 1 - axis]))
    return out


def lower_envelope(outline: np.ndarray, ax: np.ndarray) -> np.ndarray:
    """Height of the lowest edge of a lung ``outline`` (its diaphragm) at ``|x| = ax``; beyond the
    lung's width the edge is continued flat."""
    o = np.abs(outline) * np.array([1.0, np.sign(outline[:, 1].max())])
    a = np.clip(np.asarray(ax, float), o[:, 0].min() + 1e-6, o[:, 0].max() - 1e-6)
    return np.array([c.max() for c in _crossings(o, a, 0)])


def lateral_envelope(outline: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``|x|`` of the outermost edge of a lung ``outline`` (the chest wall) at heights ``y``."""
    o = np.abs(outline) * np.array([1.0, 1.0])
    o[:, 1] = outline[:, 1]
    yy = np.clip(np.asarray(y, float), o[:, 1].min() + 1e-6, o[:, 1].max() - 1e-6)
    return np.array([c.max() for c in _crossings(o, yy, 1)])


def geometry(sh: Shapes) -> dict[str, float]:
    """Measurements the rest of the phantom is placed by: thoracic half-width, dome heights
    (at half the width, per side), top of the heart."""
    W = float((np.abs(sh.right_lung[:, 0]).max() + np.abs(sh.left_lung[:, 0]).max()) / 2)
    dome = {s: float(lower_envelope(o, np.array([0.72 * W]))[0]) for s, o in (("r", sh.right_lung), ("l", sh.left_lung))}
    return {"width": W, "dome_r": dome["r"], "dome_l": dome["l"], "heart_top": float(sh.heart[:, 1].min())}


class Tables:
    """Lookup tables of one patient's outlines: chest wall, mediastinal border and diaphragm per side."""

    def __init__(self, sh: Shapes):
        self.y = np.linspace(-0.2, 1.2, 141)
        self.ax = np.linspace(0.0, 1.0, 101)
        self.lat, self.med, self.low = {}, {}, {}
        for s, o in ((-1, sh.right_lung), (1, sh.left_lung)):
            cross = _crossings(o, np.clip(self.y, o[:, 1].min() + 1e-6, o[:, 1].max() - 1e-6), 1)
            self.lat[s] = np.array([np.abs(c).max() for c in cross])
            self.med[s] = np.array([np.abs(c).min() for c in cross])
            self.low[s] = lower_envelope(o, self.ax)

    def lateral(self, y: np.ndarray) -> np.ndarray:
        """Mean |x| of the two chest walls at heights ``y``."""
        return (np.interp(y, self.y, self.lat[-1]) + np.interp(y, self.y, self.lat[1])) / 2

    def medial(self, y: np.ndarray, s: int) -> np.ndarray:
        """|x| of the mediastinal edge of lung ``s`` at heights ``y``."""
        return np.interp(y, self.y, self.med[s])

    def lower(self, ax: np.ndarray, s) -> np.ndarray:
        """Height of the diaphragm under lung ``s`` (scalar or array of -1/+1) at ``|x| = ax``."""
        r, l_ = np.interp(ax, self.ax, self.low[-1]), np.interp(ax, self.ax, self.low[1])
        return np.where(np.asarray(s) < 0, r, l_)


def scaled_heart(sh: Shapes, ctr: float, mag: float) -> Shapes:
    """The shape model's heart widened or narrowed about its centre to ``ctr`` of the thoracic
    width (times the view's magnification), growing upward from its base as a big heart does."""
    W = (np.abs(sh.right_lung[:, 0]).max() + np.abs(sh.left_lung[:, 0]).max())
    h = sh.heart
    f = ctr * W * mag / max(np.ptp(h[:, 0]), 1e-3)
    cx, bottom = (h[:, 0].max() + h[:, 0].min()) / 2, h[:, 1].max()
    fy = 1 + 0.5 * (f - 1)
    heart = np.stack([max(cx, 0.04) + (h[:, 0] - cx) * f, bottom + (h[:, 1] - bottom) * fy], 1)  # levocardia
    return Shapes(sh.right_lung, sh.left_lung, heart)


def cp_angle(outline: np.ndarray, s: int) -> tuple[float, float]:
    """The costophrenic angle: the lowest, most lateral point of a lung outline."""
    k = int(np.argmax(outline[:, 1] + 0.5 * np.abs(outline[:, 0])))
    return float(outline[k, 0]), float(outline[k, 1])
