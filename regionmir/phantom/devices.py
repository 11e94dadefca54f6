"""Support devices on the film: ECG electrodes and leads, endotracheal and enteric tubes,
central venous lines. AP portables (ICU, ward) carry them often, PA films seldom.

They sit in front of the patient, not in the anatomy: they add attenuation (plastic faintly,
the radiopaque stripe of a tube and metal snaps strongly) and never move a region's box.
Placement follows bedside practice: the endotracheal tube tip 3-7 cm above the carina, the
enteric tube down the oesophagus left of the trachea into the gastric bubble, a central line
from the right or left neck or subclavian vein into the superior vena cava, its tip near the
cavoatrial junction; ECG electrodes below the clavicles and on the lower chest, their leads
running off the film. Coordinates are lung units (``x`` toward the patient's left, ``y`` from
the apex 0 to the costophrenic angle 1, about 25 cm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from regionmir.phantom.raster import ANTERIOR, Raster, arr

# how often each device is on a film, by view (ICU portables vs outpatient PA films)
P_DEVICE = {
    "AP": {"ecg": 0.6, "ett": 0.3, "enteric": 0.3, "central": 0.35},
    "PA": {"ecg": 0.05, "ett": 0.0, "enteric": 0.0, "central": 0.03},
}
PLASTIC, STRIPE, WIRE, METAL = 0.12, 1.2, 0.7, 2.0  # attenuation added (bones: 0.3-0.55)


@dataclass
class Devices:
    """What to draw: stroked paths ``(pts (K, 2), width, value)`` and discs ``(xy, radius, value)``."""

    kinds: list[str] = field(default_factory=list)
    paths: list[tuple[np.ndarray, float, float]] = field(default_factory=list)
    discs: list[tuple[tuple[float, float], float, float]] = field(default_factory=list)


def _curve(a, c, b, n: int = 24) -> np.ndarray:
    """Quadratic Bezier from ``a`` through control ``c`` to ``b``: ``(n, 2)``."""
    t = np.linspace(0, 1, n)[:, None]
    a, c, b = (np.asarray(v, float) for v in (a, c, b))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t**2 * b


def _tube(pts: np.ndarray, width: float, d: Devices) -> None:
    """A plastic tube with its radiopaque stripe."""
    d.paths.append((pts, width, PLASTIC))
    d.paths.append((pts + np.array([width * 0.25, 0.0]), 0.006, STRIPE))


def sample(view: str, trachea: np.ndarray, carina: tuple[float, float], heart_top: float,
           gastric: np.ndarray, width: float, rng: np.random.Generator) -> Devices:
    """Draw the devices of one exposure.

    Args:
        trachea: ``(K, 2)`` the trachea's centre line (top to carina); ``gastric``: the gastric
            bubble's outline; ``width``: the thorax half width; all lung units.
    """
    p = P_DEVICE.get(view, P_DEVICE["PA"])
    d = Devices()
    cy = carina[1]
    if rng.random() < p["ett"]:
        tip = cy - rng.uniform(0.12, 0.28)  # 3-7 cm above the carina
        ys = np.linspace(-0.9, tip, 20)
        xs = np.interp(ys, trachea[:, 1], trachea[:, 0]) + rng.normal(0, 0.006)
        _tube(np.stack([xs, ys], 1), 0.035, d)
        d.kinds.append("ett")
    if rng.random() < p["enteric"]:
        g = gastric.mean(0)
        x0 = float(np.interp(cy, trachea[:, 1], trachea[:, 0])) + 0.03
        mid = _curve((x0 - 0.01, -0.9), (x0 + 0.02, cy), (x0 + 0.04, g[1] - 0.15), 20)
        into = _curve(mid[-1], (g[0] - 0.05, g[1] - 0.05), g + rng.normal(0, 0.03, 2), 12)
        _tube(np.concatenate([mid, into[1:]]), 0.02, d)
        d.kinds.append("enteric")
    if rng.random() < p["central"]:
        side = -1 if rng.random() < 0.7 else 1  # right-sided lines are the common ones
        tip = (-0.07 + rng.normal(0, 0.01), heart_top + rng.uniform(-0.08, 0.04))
        if rng.random() < 0.5:  # internal jugular: down the neck
            start, ctrl = (side * 0.2, -0.9), (side * 0.16, -0.15)
        else:  # subclavian: under the clavicle, from the side
            start, ctrl = (side * 1.1 * width, 0.02), (side * 0.1, -0.05)
        d.paths.append((_curve(start, ctrl, tip), 0.01, WIRE))
        d.kinds.append("central")
    if rng.random() < p["ecg"]:
        n = int(rng.integers(3, 6))
        for i in range(n):
            upper = i < 2 or rng.random() < 0.4
            s = (-1, 1)[i % 2]
            xy = (s * rng.uniform(0.45, 0.85) * width,
                  rng.uniform(-0.08, 0.15) if upper else rng.uniform(0.8, 1.2))
            d.discs.append((xy, 0.035, 0.15))  # foam pad and gel
            d.discs.append((xy, 0.012, METAL))  # snap
            end = (xy[0] + s * rng.uniform(0.3, 0.8), xy[1] + rng.uniform(-0.8, 0.4))
            ctrl = ((xy[0] + end[0]) / 2 + rng.normal(0, 0.15), (xy[1] + end[1]) / 2 + rng.normal(0, 0.15))
            d.paths.append((_curve(xy, ctrl, end), 0.005, WIRE))
        d.kinds.append("ecg")
    return d


def draw(d: Devices, r: Raster) -> np.ndarray:
    """The attenuation the devices add on the working grid ``(h, w)``."""
    im = r.new()
    for pts, width, value in d.paths:
        r.lines([(pts, width)], value, ANTERIOR, into=im)
    layers: dict[float, tuple] = {}  # one layer per value: a snap adds to its pad, not replaces it
    for xy, radius, value in d.discs:
        if value not in layers:
            layers[value] = r.new()
        r.disc(xy, radius, value, ANTERIOR, into=layers[value])
    out = arr(im)
    for layer in layers.values():
        out = out + arr(layer)
    return out
