"""Findings: sampled per patient and study, drawn into the attenuation map, named on regions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regionmir.anatomy import Anatomy as A
from regionmir.phantom.body import Body, Thorax, ellipse
from regionmir.phantom.raster import Raster, arr, smooth

LABELS = ("nodule", "lung opacity", "consolidation", "pleural effusion", "pneumothorax",
          "enlarged cardiac silhouette", "atelectasis")
_ACUTE = ("lung opacity", "consolidation", "pleural effusion", "pneumothorax", "atelectasis")
_ACUTE_P = (0.3, 0.2, 0.22, 0.1, 0.18)
_ZONES = ("upper", "mid", "lower")


@dataclass(frozen=True)
class Finding:
    """One finding: label, where it is (lung units), how big, and its report sentence."""

    label: str
    side: int  # -1 patient's right, +1 left, 0 midline
    zone: str  # "upper" / "mid" / "lower" / ""
    x: float = 0.0  # centre, lung units
    y: float = 0.0
    size: float = 0.0  # lung units
    seed: int = 0

    @property
    def side_name(self) -> str:
        return {-1: "right", 1: "left"}.get(self.side, "")

    def regions(self) -> tuple[A, ...]:
        """The regions that carry this finding's label (with their parent lung)."""
        if self.label == "enlarged cardiac silhouette":
            return (A.CARDIAC_SILHOUETTE,)
        sd = self.side_name.upper()
        zone = A[f"{sd}_{self.zone.upper()}_LUNG_ZONE"]
        extra = {
            "pleural effusion": (A[f"{sd}_COSTOPHRENIC_ANGLE"], A[f"{sd}_HEMIDIAPHRAGM"]),
            "pneumothorax": (A[f"{sd}_APICAL_ZONE"],),
        }.get(self.label, ())
        return (A[f"{sd}_LUNG"], zone, *extra)

    def phrase(self) -> str:
        """A report sentence about this finding."""
        side, zone = self.side_name, self.zone
        mm = round(self.size * 240)
        return {
            "nodule": f"A {mm / 10:.1f} cm nodule projects over the {side} {zone} lung zone.",
            "lung opacity": f"Patchy opacity in the {side} {zone} lung zone.",
            "consolidation": f"Dense consolidation in the {side} {zone} lung zone with air bronchograms.",
            "pleural effusion": f"{'Small' if self.size < 0.12 else 'Moderate'} {side} pleural effusion "
                                f"blunting the {side} costophrenic angle.",
            "pneumothorax": f"Small {side} apical pneumothorax; the visceral pleural line is visible.",
            "enlarged cardiac silhouette": "The cardiac silhouette is enlarged.",
            "atelectasis": f"Plate-like atelectasis in the {side} {zone} lung zone.",
        }[self.label]


def _inside(th: Thorax, rng, side: int, zone: str) -> tuple[float, float]:
    """A point well inside one lung zone."""
    lo, hi = {"upper": (0.15, 0.33), "mid": (0.38, 0.6), "lower": (0.62, 0.8)}[zone]
    y = float(rng.uniform(lo, hi))
    a, b = float(th.border(np.array([y]), side)[0]), float(th.lateral(np.array([y]))[0])
    lo_x, hi_x = sorted((a + 0.3 * (b - a), b - 0.15 * (b - a)))  # a thorax narrower than its mediastinum here
    return side * float(rng.uniform(lo_x, hi_x)), y


def sample(rng: np.random.Generator, th: Thorax, chronic: list[Finding]) -> list[Finding]:
    """Findings of one study: the patient's chronic ones plus, in about half, acute ones."""
    out = list(chronic)
    if th.p.ctr > 0.52:
        out.append(Finding("enlarged cardiac silhouette", 0, ""))
    if rng.random() < 0.5:
        return out
    for label in rng.choice(_ACUTE, size=1 + int(rng.random() < 0.3), replace=False, p=_ACUTE_P):
        side = -1 if rng.random() < 0.5 else 1
        zone = {"pleural effusion": "lower", "pneumothorax": "upper", "atelectasis": "lower"}.get(
            str(label), _ZONES[int(rng.choice(3, p=(0.25, 0.3, 0.45)))])
        x, y = _inside(th, rng, side, zone)
        size = float(rng.uniform(0.06, 0.18))
        out.append(Finding(str(label), side, zone, x, y, size, int(rng.integers(2**31))))
    return out


def chronic(rng: np.random.Generator, th: Thorax) -> list[Finding]:
    """Findings that stay with a patient across studies (a nodule)."""
    if rng.random() >= 0.12:
        return []
    side = -1 if rng.random() < 0.5 else 1
    zone = _ZONES[int(rng.integers(3))]
    x, y = _inside(th, rng, side, zone)
    return [Finding("nodule", side, zone, x, y, float(rng.uniform(0.03, 0.06)), 0)]


def draw(fs: list[Finding], b: Body, th: Thorax, r: Raster, lungs: np.ndarray, tex: np.ndarray,
         air: np.ndarray | None = None):
    """Attenuation added by the findings and a mask where lung markings vanish (pneumothorax).

    ``air`` is the attenuation the aerated lung lacks at each pixel; fluid and consolidation
    fill those air spaces, so they add at most about that much (defaults to a flat lung).

    Returns:
        ``(delta, no_markings)``: ``(h, w)`` float32 attenuation, ``(h, w)`` float32 in [0, 1].
    """
    h, w = lungs.shape
    delta = np.zeros((h, w), np.float32)
    clear = np.zeros((h, w), np.float32)
    px = r.f.units(1.0)
    air = 2.0 * lungs if air is None else air
    for f in fs:
        rng = np.random.default_rng(f.seed)
        if f.label == "nodule":
            d = arr(r.disc((f.x, f.y), f.size / 2))
            delta += 1.6 * np.sqrt(smooth(d, px * f.size * 0.15).clip(0, 1))
        elif f.label in ("lung opacity", "consolidation"):
            blob = arr(r.poly(ellipse(f.x, f.y, f.size * 1.1, f.size, 24)))
            blob = smooth(blob, px * f.size * 0.5) * lungs
            patch = np.clip(blob * (1.0 + 0.5 * tex) - 0.2, 0, None)
            fill = 0.55 if f.label == "lung opacity" else 0.95
            delta += np.minimum((1.1 if f.label == "lung opacity" else 2.0) * patch, fill * air)
            if f.label == "consolidation":
                hil = b.points[f"{f.side_name}_hilum"]
                paths = [(np.array([[hil[0], hil[1]], [f.x + rng.normal(0, f.size * 0.5),
                          f.y + rng.normal(0, f.size * 0.5)]]), 0.012) for _ in range(3)]
                delta -= 0.5 * arr(r.lines(paths)) * (patch > 0.2)
        elif f.label == "pleural effusion":
            delta += _effusion(f, th, r, px) * (air + 0.25) * np.clip(smooth(lungs, px * 0.03) * 2, 0, 1)
        elif f.label == "pneumothorax":
            ring = _ptx(f, b, r)
            clear = np.maximum(clear, ring[0])
            delta += 0.6 * ring[1] - 0.3 * ring[0]
        elif f.label == "atelectasis":
            ang = rng.normal(0, 0.15)
            dx, dy = np.cos(ang) * f.size, np.sin(ang) * f.size
            sag = rng.normal(0, 0.012)  # plates are slightly curved
            pts = np.array([[f.x - dx, f.y - dy], [f.x, f.y + sag], [f.x + dx, f.y + dy]])
            line = arr(r.lines([(pts, 0.018)]))
            delta += 0.9 * smooth(line, px * 0.008) * lungs
    return delta, clear


def _effusion(f: Finding, th: Thorax, r: Raster, px: float) -> np.ndarray:
    """Fluid at the lung base, in [0, 1]: a meniscus rising along the lateral wall, a hazy upper
    border (the fluid layer thins anteriorly), fully opaque at the bottom."""
    s = f.side
    level = th.dome[s] - 0.02 - f.size * 0.8
    ax = np.linspace(0.02, th.W + 0.04, 24)
    top = level - (0.9 * f.size + 0.04) * ((ax - 0.02) / th.W) ** 2.5
    pts = np.concatenate([np.stack([s * ax, top], 1), [[s * (th.W + 0.04), 1.25], [s * 0.02, 1.25]]])
    m = r.mask(pts).astype(np.float32)
    return np.clip(smooth(m, px * 0.045) * 1.4 - 0.2, 0, 1)


def _ptx(f: Finding, b: Body, r: Raster) -> tuple[np.ndarray, np.ndarray]:
    """(air space without markings, visceral pleural line) of an apical pneumothorax."""
    lung = b.polys[f"{f.side_name}_lung"]
    hil = np.array(b.points[f"{f.side_name}_hilum"])
    shrunk = hil + (lung - hil) * (1 - 0.5 * f.size)
    whole, inner = arr(r.poly(lung)), arr(r.poly(shrunk))
    band = arr(r.poly(np.array([[-5, -5], [5, -5], [5, f.y + 0.35], [-5, f.y + 0.35]])))
    space = whole * (1 - inner) * band
    edge = arr(r.lines([(np.concatenate([shrunk, shrunk[:1]]), 0.006)])) * whole * band * (1 - space)
    return space, edge
