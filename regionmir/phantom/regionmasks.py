"""Masks of the 36 Chest ImaGenome regions on the rendered grid, and boxes derived from them."""

from __future__ import annotations

import numpy as np

from regionmir.anatomy import Anatomy as A
from regionmir.phantom.body import Body, Thorax
from regionmir.phantom.raster import ANTERIOR, POSTERIOR, Raster
from regionmir.regions import Box

FAR = 5.0  # lung units: "far enough" to close half-planes


def _square(xy, half: float) -> np.ndarray:
    x, y = xy
    return np.array([[x - half, y - half], [x + half, y - half], [x + half, y + half], [x - half, y + half]])


def _side(s: int) -> np.ndarray:
    """Half-plane of the patient's right (s=-1) or left (s=+1) of the midline."""
    return np.array([[0, -FAR], [s * FAR, -FAR], [s * FAR, FAR], [0, FAR]])


def _above(y: float) -> np.ndarray:
    return np.array([[-FAR, -FAR], [FAR, -FAR], [FAR, y], [-FAR, y]])


def structures(b: Body, th: Thorax, r: Raster) -> dict[str, np.ndarray]:
    """Boolean masks of the drawn structures (working grid), shared by rendering and regions."""
    m = {}
    L = lambda paths, depth=0.0: np.asarray(r.lines(paths, 1, depth, into=r.new("L"))) > 0  # noqa: E731
    body = r.new("L")
    r.poly(b.polys["body"], 1, into=body)
    for k in (-1, 1):
        r.poly(b.polys[f"arm_{k}"], 1, into=body)
    m["torso"] = r.mask(b.polys["body"])
    m["body"] = np.asarray(body[0]) > 0
    m["heart"] = r.mask(b.polys["heart"], ANTERIOR)
    m["mediastinum"] = r.mask(b.polys["mediastinum"], ANTERIOR * 0.5)
    for side in ("right", "left"):
        m[f"{side}_lung"] = r.mask(b.polys[f"{side}_lung"])
    clav = b.lines["clavicle"]
    m["right_clavicle"] = L([clav[0]], ANTERIOR)
    m["left_clavicle"] = L([clav[1]], ANTERIOR)
    m["trachea"] = L(b.lines["trachea"])
    m["knob"] = r.mask(b.polys["knob"])
    m["spine"] = L([(spine_path(th), 0.11)], POSTERIOR)
    m["aorta"] = L([(aorta_path(th, b), 0.05)], POSTERIOR * 0.5)
    below = np.concatenate([diaphragm_path(th, -1)[::-1], diaphragm_path(th, 1),
                            [[FAR, FAR], [-FAR, FAR]]])
    m["abdomen"] = r.mask(below) & m["torso"] & ~m["heart"]
    return m


def spine_path(th: Thorax) -> np.ndarray:
    y = np.linspace(-0.3, 1.05, 12)
    return np.stack([th.p.scoliosis * np.sin(np.pi * y), y], 1)


def aorta_path(th: Thorax, b: Body) -> np.ndarray:
    kx, ky = b.points["knob"]
    return np.array([[kx, ky], [0.07, ky + 0.15], [0.06, th.base - 0.1], [0.055, th.base + 0.06]])


def diaphragm_path(th: Thorax, s: int) -> np.ndarray:
    """From the midline out to beyond the costophrenic angle."""
    ax = np.linspace(0.0, th.W, 24)
    y = np.maximum(th.diaphragm(ax, s), np.where(ax < th.cardiophrenic(s)[0], th.base - 0.01, 0))
    pts = np.stack([s * ax, y], 1)
    return np.concatenate([pts, [[s * (th.W + 0.5), 1.3]]])


def regions(b: Body, th: Thorax, r: Raster, m: dict[str, np.ndarray]) -> dict[A, np.ndarray]:
    """Boolean mask of each of the 36 regions."""
    out: dict[A, np.ndarray] = {}
    P = lambda pts, depth=0.0: r.mask(np.asarray(pts, float), depth)  # noqa: E731
    for s, side in ((-1, "RIGHT"), (1, "LEFT")):
        lung = m[f"{side.lower()}_lung"]
        out[A[f"{side}_LUNG"]] = lung
        rows = np.nonzero(lung.any(1))[0]
        y0, y1 = (rows[0], rows[-1] + 1) if len(rows) else (0, 1)
        cut = np.linspace(y0, y1, 4).round().astype(int)
        for k, zone in enumerate(("UPPER", "MID", "LOWER")):
            z = np.zeros_like(lung)
            z[cut[k]:cut[k + 1]] = lung[cut[k]:cut[k + 1]]
            out[A[f"{side}_{zone}_LUNG_ZONE"]] = z
        out[A[f"{side}_APICAL_ZONE"]] = lung & _apical(b, r, lung, s, y0, y1)
        cp = b.points[f"{side.lower()}_cp"]
        out[A[f"{side}_COSTOPHRENIC_ANGLE"]] = lung & P(_square((cp[0] - s * 0.05, cp[1] - 0.05), 0.08))
        out[A[f"{side}_HILAR_STRUCTURES"]] = np.asarray(r.disc(b.points[f"{side.lower()}_hilum"], 0.085, 1, into=r.new("L"))) > 0
        out[A[f"{side}_HEMIDIAPHRAGM"]] = P(_band(th, s))
        out[A[f"{side}_CLAVICLE"]] = m[f"{side.lower()}_clavicle"]
        cph = b.points[f"{side.lower()}_cardiophrenic"]
        out[A[f"{side}_CARDIOPHRENIC_ANGLE"]] = P(_square((cph[0] + s * 0.02, cph[1] - 0.04), 0.055), ANTERIOR)
        half = P(_side(s), ANTERIOR)
        out[A[f"{side}_CARDIAC_SILHOUETTE"]] = m["heart"] & half
        out[A[f"{side}_UPPER_ABDOMEN"]] = m["abdomen"] & half & P(_above(th.dome[s] + 0.4))
    out[A.TRACHEA] = m["trachea"] & P(_above(th.carina[1]))
    out[A.SPINE] = m["spine"]
    out[A.AORTIC_ARCH] = m["knob"]
    out[A.MEDIASTINUM] = m["mediastinum"]
    out[A.UPPER_MEDIASTINUM] = m["mediastinum"] & P(_above(th.top), ANTERIOR)
    out[A.SVC] = P(_svc(th), ANTERIOR)
    cx, cy = _cavoatrial(th)
    out[A.CAVOATRIAL_JUNCTION] = P(_square((cx, cy), 0.04), ANTERIOR)
    atrium = _side(-1) + np.array([0.03, 0])
    if th.sh is not None:  # the right heart border below the cavoatrial junction, not the whole right half
        atrium = np.array([[0.03, cy + 0.04], [-FAR, cy + 0.04], [-FAR, FAR], [0.03, FAR]])
    out[A.RIGHT_ATRIUM] = m["heart"] & P(atrium, ANTERIOR)
    out[A.CARINA] = np.asarray(r.disc(th.carina, 0.045, 1, into=r.new("L"))) > 0
    out[A.ABDOMEN] = m["abdomen"]
    out[A.CARDIAC_SILHOUETTE] = m["heart"]
    out[A.DESCENDING_AORTA] = m["aorta"]
    return out


def _apical(b: Body, r: Raster, lung: np.ndarray, s: int, y0: int, y1: int) -> np.ndarray:
    """Above the clavicle's lower edge, and at least the top eighth of the lung."""
    path = b.lines["clavicle"][0 if s < 0 else 1][0] + np.array([0, 0.022])
    top = np.concatenate([path, [[path[-1, 0], -FAR], [path[0, 0], -FAR]]])
    above = r.mask(top, ANTERIOR)
    floor = np.zeros_like(lung)
    floor[: y0 + max(2, (y1 - y0) // 8)] = True
    return above | floor


def _band(th: Thorax, s: int) -> np.ndarray:
    """The hemidiaphragm: a band along the dome. With shape-model lungs it stops short of the
    costophrenic angle and reaches further below, so it is not the lower lung zone again."""
    ax0 = th.cardiophrenic(s)[0]
    shaped = th.sh is not None
    if shaped:  # the left dome runs on under the heart: from a third of the width out
        ax0 = min(ax0, 0.35 * th.W)
    ax = np.linspace(ax0, th.W * 0.85 if shaped else th.W + 0.01, 20)
    y = th.diaphragm(ax, s)
    upper = np.stack([s * ax, y - 0.02], 1)
    lower = np.stack([s * ax, y + (0.07 if shaped else 0.035)], 1)[::-1]
    return np.concatenate([upper, lower])


def _cavoatrial(th: Thorax) -> tuple[float, float]:
    """Where the SVC meets the right atrium: the top of the right heart border."""
    if th.sh is None:
        return -float(th.border(np.array([th.top]), -1)[0]), th.top + 0.02
    h = th.sh.heart
    right = h[h[:, 0] < -0.6 * th.hr]
    k = int(np.argmin(right[:, 1]))
    return float(right[k, 0]) + 0.02, float(right[k, 1]) + 0.02


def _svc(th: Thorax) -> np.ndarray:
    y = np.linspace(0.02, th.top + 0.03, 10)
    x = th.border(y, -1)
    return np.concatenate([np.stack([-x - 0.01, y], 1), np.stack([-x + 0.045, y], 1)[::-1]])


def boxes(masks: dict[A, np.ndarray], width: int, height: int, fallback) -> dict[A, Box]:
    """Tight boxes of each mask, scaled from the working grid to output pixels.

    ``fallback(anatomy)`` gives a box for a mask that fell wholly outside the image.
    """
    out = {}
    for a in A:
        mask = masks[a]
        h, w = mask.shape
        fx, fy = width / w, height / h
        cols, rows = np.nonzero(mask.any(0))[0], np.nonzero(mask.any(1))[0]
        if len(cols) == 0:
            out[a] = fallback(a)
            continue
        out[a] = Box(cols[0] * fx, rows[0] * fy, min(width, (cols[-1] + 1) * fx), min(height, (rows[-1] + 1) * fy))
    return out
