"""Anatomical outlines of a patient in lung units: lungs, heart, mediastinum, bones, airways."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from regionmir.phantom import shapemodel
from regionmir.phantom.patient import Patient, Pose

Pts = np.ndarray  # (N, 2) points (x, y) in lung units; x > 0 is the patient's left


@dataclass
class Body:
    """Shapes of one patient in one pose (before projection onto the detector)."""

    polys: dict[str, Pts] = field(default_factory=dict)  # closed outlines
    lines: dict[str, list[tuple[Pts, float]]] = field(default_factory=dict)  # layer -> (path, width)
    points: dict[str, tuple[float, float]] = field(default_factory=dict)
    heart_mag: float = 1.0


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28, a0=0.0, a1=2 * np.pi) -> Pts:
    """Points of an ellipse arc (angles ``a0``..``a1``; y down, so pi..2pi is the upper half)."""
    a = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


class Thorax:
    """Borders of the thoracic structures as functions of height, for one patient and view."""

    def __init__(self, p: Patient, pose: Pose):
        self.p = p
        self.W = p.width
        ap = pose.view == "AP"
        self.heart_mag = 1.12 if ap else 1.0  # AP: heart farther from the detector
        width = p.ctr * 2 * self.W * self.heart_mag / np.sqrt(pose.insp)
        self.hr, self.hl = 0.34 * width, 0.66 * width  # right / left heart extent from midline
        self.top = p.heart_y
        self.dome = {-1: p.dome_r, 1: p.dome_l}
        self.base = (p.dome_r + p.dome_l) / 2 + 0.05
        self.carina = (-0.005, p.heart_y - 0.1)
        self.sh = self.tab = None
        if p.shape:  # outlines from the shape model; the heart scaled to the patient's CTR
            self.sh = shapemodel.scaled_heart(shapemodel.shapes(p.shape), p.ctr, self.heart_mag / np.sqrt(pose.insp))
            self.tab = shapemodel.Tables(self.sh)
            self.top = float(self.sh.heart[:, 1].min())
            self.hr, self.hl = float(-self.sh.heart[:, 0].min()), float(self.sh.heart[:, 0].max())
            self._cph = {s: self._corner(s) for s in (-1, 1)}
            self.base = max(self._cph[-1][1], self._cph[1][1]) + 0.02

    def _corner(self, s: int) -> tuple[float, float]:
        """Shape model: the cardiophrenic angle is below the heart's lower-lateral corner."""
        h = self.sh.heart
        k = int(np.argmax(s * h[:, 0] + 0.7 * h[:, 1]))
        ax = float(abs(h[k, 0]))
        return ax, float(self.tab.lower(np.array([ax]), s)[0])

    def lateral(self, y: np.ndarray) -> np.ndarray:
        """|x| of the lateral lung border (inner chest wall) at heights ``y``."""
        if self.tab is not None:
            return self.tab.lateral(y)
        t = np.clip((y - 0.1) / 0.72, 0, 1)
        a = 0.42 * self.W + 0.1
        return a + (self.W - a) * np.sin(np.pi / 2 * t) ** 0.8

    def diaphragm(self, ax: np.ndarray, s: int) -> np.ndarray:
        """Height of the hemidiaphragm of side ``s`` (-1 right, +1 left) at |x| = ``ax``."""
        if self.tab is not None:  # under the heart: flat at the cardiophrenic angle's height
            corner = np.where(np.asarray(s) < 0, self._cph[-1][0], self._cph[1][0])
            return self.tab.lower(np.maximum(ax, corner), s)
        d, dx = np.where(np.asarray(s) < 0, self.p.dome_r, self.p.dome_l), 0.5 * self.W
        lat = d + (1.0 - d) * np.clip((ax - dx) / (self.W - dx), 0, None) ** 2
        med = d + 0.04 * np.clip((dx - ax) / dx, 0, None) ** 2
        return np.where(ax > dx, lat, med)

    def border(self, y: np.ndarray, s: int) -> np.ndarray:
        """|x| of the mediastinal / cardiac border on side ``s`` at heights ``y``."""
        if self.tab is not None:
            return self.tab.medial(y, s)
        t = np.clip((y - self.top) / (self.base - self.top), 0, 1)
        if s < 0:  # SVC above, right atrium below
            upper = 0.065 + 0.02 * np.clip(y, 0, 0.5)
            heart = 0.08 + (self.hr - 0.08) * np.sin(np.pi * 0.65 * t) ** 0.7
        else:  # aortic knob, pulmonary trunk, left ventricle
            upper = 0.055 + (0.04 + self.p.knob) * np.exp(-(((y - 0.27) / 0.05) ** 2))
            upper = upper + 0.035 * np.exp(-(((y - 0.39) / 0.035) ** 2))
            g = np.sin(np.pi / 2 * np.clip(t / 0.8, 0, 1)) ** 0.9
            heart = 0.09 + (self.hl - 0.09) * g * (1 - 0.12 * np.clip((t - 0.8) / 0.2, 0, 1) ** 2)
        return np.where(y < self.top, upper, np.maximum(upper, heart))

    def cardiophrenic(self, s: int) -> tuple[float, float]:
        """Where the heart border meets the hemidiaphragm on side ``s``: (|x|, y)."""
        if self.tab is not None:
            return self._cph[s]
        y = self.base
        for _ in range(6):
            ax = float(self.border(np.array([y]), s)[0])
            y = float(self.diaphragm(np.array([ax]), s)[0])
        return ax, y


def lung(th: Thorax, s: int) -> Pts:
    """Outline of one lung: apex, lateral wall, costophrenic angle, dome, heart and mediastinum."""
    if th.sh is not None:
        return (th.sh.right_lung if s < 0 else th.sh.left_lung).copy()
    a = 0.42 * th.W + 0.1
    cx, rx = (a + 0.075) / 2, (a - 0.075) / 2
    cap = ellipse(cx, 0.1, rx, 0.1, 24, np.pi, 2 * np.pi)
    y = np.linspace(0.1, 1.0, 30)
    wall = np.stack([th.lateral(y), y], 1)
    ax_cpa, _ = th.cardiophrenic(s)
    ax = np.linspace(th.W, ax_cpa, 30)
    dia = np.stack([ax, th.diaphragm(ax, s)], 1)
    ym = np.linspace(dia[-1, 1], 0.1, 40)
    med = np.stack([th.border(ym, s), ym], 1)
    pts = np.concatenate([cap, wall, dia, med])
    return pts * np.array([s, 1.0])


def heart(th: Thorax) -> Pts:
    """Cardiac silhouette from the right atrium round the apex, bottom on the diaphragm."""
    if th.sh is not None:
        return th.sh.heart.copy()
    (axr, yr), (axl, yl) = th.cardiophrenic(-1), th.cardiophrenic(1)
    y = np.linspace(th.top, yr, 30)
    right = np.stack([-th.border(y, -1), y], 1)
    xb = np.linspace(-axr, axl, 20)
    bottom = np.stack([xb, np.maximum(th.diaphragm(np.abs(xb), np.where(xb < 0, -1, 1)), th.base - 0.01)], 1)
    y = np.linspace(yl, th.top, 30)
    left = np.stack([th.border(y, 1), y], 1)
    x = np.linspace(th.border(np.array([th.top]), 1)[0], -th.border(np.array([th.top]), -1)[0], 10)
    top = np.stack([x, th.top - 0.03 * np.sin(np.linspace(0, np.pi, 10))], 1)
    return np.concatenate([right, bottom, left, top])


def clavicle(W: float, rib_gap: float, ap: bool) -> Pts:
    """One clavicle (patient's left, x > 0): the head beside the spinous processes about one rib
    interspace below the lung apex, crossing the apex and rising gently to the acromion. AP
    (lordotic) films project it higher, over the apex."""
    cy = rib_gap * (1.1 if not ap else 0.35)
    return np.array([[0.04, cy + 0.03], [0.12, cy + 0.02], [0.24, cy - 0.005], [0.36, cy - 0.04],
                     [0.5 * W + 0.22, cy - 0.075], [W + 0.08, cy - 0.1]])


def mediastinum(th: Thorax, y0: float = -0.05) -> Pts:
    """Everything between the lungs from the thoracic inlet to the diaphragm."""
    (axr, yr), (axl, yl) = th.cardiophrenic(-1), th.cardiophrenic(1)
    y = np.linspace(y0, yr, 50)
    right = np.stack([-th.border(y, -1), y], 1)
    xb = np.linspace(-axr, axl, 20)
    bottom = np.stack([xb, np.maximum(th.diaphragm(np.abs(xb), np.where(xb < 0, -1, 1)), th.base - 0.01)], 1)
    y = np.linspace(yl, y0, 50)
    left = np.stack([th.border(y, 1), y], 1)
    return np.concatenate([right, bottom, left])


def ribs(th: Thorax, p: Patient, pose: Pose) -> tuple[list, list]:
    """Posterior ribs (near-horizontal arcs curving down laterally) and anterior ribs (down medially)."""
    post, ant = [], []
    flat = 0.75 if pose.view == "AP" else 1.0  # AP: posterior ribs more horizontal
    y0 = -0.16
    for k in range(11):
        gap = p.rib_gap * (1 + 0.035 * k)
        ax = np.linspace(0.045, 1.0, 30)
        y = y0 - 0.1 * ax + (0.95 + 0.05 * k) * flat * ax**2.3 + 0.012 * k * ax
        lat = th.lateral(y) + 0.025
        keep = ax <= lat
        ax, y = ax[keep][::2], y[keep][::2]
        post.append((np.stack([ax, y], 1), 0.032 + 0.0025 * k))
        ex, ey = ax[-1], y[-1]
        t = np.linspace(0, 1, 7)
        axa = ex - (ex - 0.13 - 0.01 * k) * t
        ya = ey + 0.05 * np.sin(np.pi * t * 0.5) * (1 - t) + (0.2 + 0.01 * k) * t**1.3
        if k >= 1 and ya[-1] < 1.0:
            ant.append((np.stack([axa, ya], 1), 0.036))
        y0 += gap
    return post, ant


@lru_cache(maxsize=64)
def vessel_tree(seed: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pulmonary vessels of one lung relative to the hilum: ``(segments (n, 3, 2), widths (n,))``.

    Seven trunks (up, lateral, down), each branching in two five times; branches get shorter,
    thinner and bend a little (three points per segment), so the tree tapers toward the pleura.
    """
    rng = np.random.default_rng([seed, s + 2])
    n0 = 7
    ang = np.linspace(-np.pi * 0.55, np.pi * 0.6, n0) + rng.normal(0, 0.12, n0)
    y = np.sin(ang) * 0.05 + rng.normal(0, 0.015, n0)  # trunks leave along the hilum, not one point
    x = rng.uniform(0.0, 0.03, n0)
    length, width = rng.uniform(0.06, 0.09, n0), np.full(n0, 0.022)
    segs, widths = [], []
    for depth in range(6):
        bend = ang + rng.normal(0, 0.25, ang.size)
        xm, ym = x + 0.5 * length * np.cos(ang), y + 0.5 * length * np.sin(ang)
        x2, y2 = xm + 0.5 * length * np.cos(bend), ym + 0.5 * length * np.sin(bend)
        segs.append(np.stack([np.stack([x, y], 1), np.stack([xm, ym], 1), np.stack([x2, y2], 1)], 1))
        widths.append(width)
        split = rng.uniform(0.2, 0.55, (2, ang.size)) * np.array([[-1.0], [1.0]])
        ang = (bend[None] + split).ravel()
        x, y = np.tile(x2, 2), np.tile(y2, 2)
        length = np.tile(length, 2) * rng.uniform(0.62, 0.82, ang.size)
        width = np.tile(width, 2) * 0.68
    return np.concatenate(segs) * np.array([s, 1.0]), np.concatenate(widths)


def bowel_gas(seed: int, th: Thorax) -> list[tuple[Pts, float]]:
    """Gas in the colon: (outline, relative darkness) pockets along the flexures and transverse colon."""
    rng = np.random.default_rng([seed, 11])
    out = []
    for _ in range(int(rng.integers(2, 7))):
        side = -1 if rng.random() < 0.4 else 1
        ax = rng.uniform(0.2, th.W * 0.9)
        y = th.diaphragm(np.array([ax]), side)[0] + rng.uniform(0.26, 0.55)
        rx, ry = rng.uniform(0.04, 0.1), rng.uniform(0.025, 0.05)
        a = np.linspace(0, 2 * np.pi, 20)
        wob = 1 + 0.18 * np.sin(3 * a + rng.uniform(0, 6)) + 0.1 * np.sin(5 * a + rng.uniform(0, 6))
        pts = np.stack([side * ax + rx * wob * np.cos(a), y + ry * wob * np.sin(a)], 1)
        out.append((pts, float(rng.uniform(0.3, 0.8))))
    return out


def build(p: Patient, pose: Pose) -> Body:
    """All outlines, paths and landmark points for ``p`` in ``pose``."""
    th = Thorax(p, pose)
    b = Body(heart_mag=th.heart_mag)
    W, ap = th.W, pose.view == "AP"
    for s, side in ((-1, "right"), (1, "left")):
        b.polys[f"{side}_lung"] = lung(th, s)
        ax, y = th.cardiophrenic(s)
        b.points[f"{side}_cardiophrenic"] = (s * ax, y)
        b.points[f"{side}_cp"] = shapemodel.cp_angle(b.polys[f"{side}_lung"], s) if th.sh is not None else (s * W, 1.0)
        b.points[f"{side}_dome"] = (s * 0.5 * W, th.dome[s])
        hy = th.carina[1] + (0.16 if s < 0 else 0.1)
        b.points[f"{side}_hilum"] = (s * (0.13 if s < 0 else 0.12), hy)
        clav = clavicle(W, p.rib_gap, ap)
        b.lines.setdefault("clavicle", []).append((clav * np.array([s, 1.0]), 0.042))
        med = 0.3 if ap else W * 0.92 + 0.03
        scap = np.array([[med, -0.08], [med - 0.02, 0.2], [med + 0.07, 0.48], [W + 0.15, 0.15],
                         [W + 0.16, -0.05], [W + 0.05, -0.12]])
        b.polys[f"{side}_scapula"] = scap * np.array([s, 1.0])
        b.polys[f"{side}_humerus"] = ellipse(s * (W + 0.15), -0.06, 0.085, 0.09)
        b.lines.setdefault("humerus", []).append(
            (np.array([[s * (W + 0.16), -0.04], [s * (W + 0.24), 1.15]]), 0.075))
        post, ant = ribs(th, p, pose)
        b.lines.setdefault("rib_post", []).extend((r * np.array([s, 1.0]), w) for r, w in post)
        b.lines.setdefault("rib_ant", []).extend((r * np.array([s, 1.0]), w) for r, w in ant)
    b.polys["heart"] = heart(th)
    b.polys["mediastinum"] = mediastinum(th)
    b.points["carina"] = th.carina
    b.points["heart_top"] = (0.0, th.top)
    b.points["base"] = (0.0, th.base)
    b.points["knob"] = (th.border(np.array([0.27]), 1)[0] - 0.04, 0.27)
    b.polys["knob"] = ellipse(*b.points["knob"], 0.05, 0.045)
    _airway(b, th)
    _body_outline(b, p, th)
    return b


def _airway(b: Body, th: Thorax) -> None:
    cx, cy = th.carina
    y = np.linspace(-0.9, cy, 20)
    x = cx - 0.012 * np.exp(-(((y - 0.25) / 0.1) ** 2))
    b.lines["trachea"] = [(np.stack([x, y], 1), 0.075)]
    b.lines["bronchi"] = [
        (np.array([[cx, cy], [-0.1, cy + 0.09], [-0.14, cy + 0.2]]), 0.042),
        (np.array([[cx, cy], [0.09, cy + 0.06], [0.15, cy + 0.12]]), 0.038),
    ]


def _body_outline(b: Body, p: Patient, th: Thorax) -> None:
    W, st = th.W, p.soft
    neck = 0.16 + 0.4 * st
    t = np.linspace(0, 1, 12)
    shoulder = np.stack([-(neck + (W + 0.2 + st - neck) * np.sin(np.pi / 2 * t) ** 0.7),
                         -0.36 + 0.3 * t**1.5], 1)
    wall = np.array([(-(W + 0.24 + st), -0.02), (-(W + 0.14 + st), 0.3), (-(W + 0.06 + st), 0.6),
                     (-(W + 0.04 + st), 1.1), (-(W + 0.02 + 1.2 * st), 2.5)])
    right = np.concatenate([[[-neck, -2.0]], shoulder, wall])
    b.polys["body"] = np.concatenate([right, right[::-1] * np.array([-1.0, 1.0])])
    for s in (-1, 1):  # upper arms hanging beside the chest, out of the field below
        rx, cx = 0.12 + 0.5 * st, s * (W + 0.27 + st)
        cap = ellipse(cx, -0.12, rx, 0.2, 16, np.pi, 2 * np.pi)
        b.polys[f"arm_{s}"] = np.concatenate([cap, [[cx + rx * 0.92, 1.9], [cx - rx * 0.92, 1.9]]])
    if p.breasts > 0:
        for s in (-1, 1):
            b.polys[f"breast_{s}"] = ellipse(s * 0.34 * W / 0.5, 0.8, 0.2 * p.breasts, 0.15 * p.breasts)
    b.polys["gastric"] = gastric_bubble(th, 0.7 + 0.6 * (p.seed % 1000) / 1000)


def gastric_bubble(th: Thorax, g: float) -> Pts:
    """Air in the gastric fundus under the LEFT hemidiaphragm, with a flat air-fluid level."""
    ax = 0.55 * th.W + 0.03
    xs = np.linspace(ax - 0.1 * g, ax + 0.1 * g, 17)
    under = th.diaphragm(xs, 1) + 0.015
    cph = th.cardiophrenic(1)[0]
    under = np.where(xs < cph, np.maximum(under, th.base + 0.005), under)
    level = float(th.diaphragm(np.array([ax]), 1)[0]) + 0.03 + 0.05 * g
    dome = level - 0.05 * g * np.sqrt(np.clip(1 - ((xs - ax) / (0.1 * g)) ** 2, 0, 1))
    top = np.minimum(np.maximum(dome, under), level)
    return np.concatenate([np.stack([xs, top], 1), [[xs[-1], level], [xs[0], level]]])
