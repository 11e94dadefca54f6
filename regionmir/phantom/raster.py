"""Projection of body outlines onto the detector grid and their rasterisation (PIL, fast)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from regionmir.phantom.patient import Patient, Pose

# Structures in front of the spine move with the axial twist of the patient; the spine against it.
ANTERIOR, POSTERIOR = 1.0, -0.6


class Frame:
    """Maps lung units (x to the patient's left, y down) to working-grid pixels."""

    def __init__(self, p: Patient, pose: Pose, h: int, w: int):
        self.h, self.w = h, w
        mm = pose.spacing_mm * pose.height / h  # mm per working pixel
        self.s = p.lung_mm / mm  # pixels per lung unit
        apex_mm = 55.0 if pose.height >= pose.width else 42.0
        self.cx = w / 2 + pose.shift_mm[0] / mm
        self.cy = apex_mm / mm + pose.shift_mm[1] / mm * 0.5
        if pose.framing is not None:  # lungs placed as on real films (shape model's framing)
            y0, height, x0 = pose.framing
            self.s, self.cy, self.cx = height * h, y0 * h, x0 * w
        a = np.deg2rad(pose.tilt_deg)
        self.cos, self.sin = float(np.cos(a)), float(np.sin(a))
        self.insp, self.twist = pose.insp, pose.twist

    def __call__(self, pts: np.ndarray, depth: float = 0.0) -> np.ndarray:
        """``(N, 2)`` lung units -> ``(N, 2)`` pixels; ``depth`` scales the twist shift."""
        x = pts[:, 0] + self.twist * depth
        y = np.where(pts[:, 1] > 0, pts[:, 1] * self.insp, pts[:, 1])
        X = self.cx + self.s * (self.cos * x - self.sin * y)
        Y = self.cy + self.s * (self.sin * x + self.cos * y)
        return np.stack([X, Y], 1)

    def point(self, xy: tuple[float, float], depth: float = 0.0) -> tuple[float, float]:
        """One point in pixels."""
        q = self(np.array([xy], dtype=float), depth)[0]
        return float(q[0]), float(q[1])

    def units(self, length: float) -> float:
        """A length in lung units -> pixels."""
        return length * self.s


class Raster:
    """Draws projected shapes into float32 layers of the working grid."""

    def __init__(self, frame: Frame):
        self.f = frame
        self.size = (frame.w, frame.h)

    def new(self, mode: str = "F") -> tuple[Image.Image, ImageDraw.ImageDraw]:
        """An empty layer: "F" float32 for densities, "L" bytes for masks."""
        im = Image.new(mode, self.size, 0)
        return im, ImageDraw.Draw(im)

    def mask(self, pts: np.ndarray, depth: float = 0.0) -> np.ndarray:
        """Boolean mask of a closed outline (lung units)."""
        return np.asarray(self.poly(pts, 1, depth, into=self.new("L"))) > 0

    def poly(self, pts: np.ndarray, value: float = 1.0, depth: float = 0.0, into=None) -> Image.Image:
        """Fill a closed outline (lung units)."""
        im, d = into or self.new()
        q = self.f(pts, depth)
        d.polygon([tuple(v) for v in q.tolist()], fill=value if im.mode == "L" else float(value))
        return im

    def lines(self, paths, value: float = 1.0, depth: float = 0.0, widen: float = 1.0, into=None):
        """Stroke paths ``[(pts, width_units), ...]``; ``widen`` scales every width."""
        im, d = into or self.new()
        for pts, width in paths:
            q = self.f(pts, depth)
            wpx = max(1, int(round(self.f.units(width * widen))))
            fill = int(value) if im.mode == "L" else float(value)
            d.line([tuple(v) for v in q.tolist()], fill=fill, width=wpx, joint="curve")
        return im

    def disc(self, xy, r: float, value: float = 1.0, depth: float = 0.0, into=None):
        """Fill a circle of radius ``r`` lung units around ``xy``."""
        im, d = into or self.new()
        x, y = self.f.point(xy, depth)
        rp = self.f.units(r)
        d.ellipse([x - rp, y - rp, x + rp, y + rp], fill=int(value) if im.mode == "L" else float(value))
        return im


def arr(im: Image.Image | tuple) -> np.ndarray:
    """A PIL layer (or ``(image, draw)`` pair) as a writable float32 array."""
    if isinstance(im, tuple):
        im = im[0]
    return np.array(im, dtype=np.float32)


def smooth(a: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-like blur of a smooth field, computed at reduced resolution (fast for large sigma)."""
    h, w = a.shape
    k = int(max(1, min(sigma_px / 2.0, min(h, w) / 16)))
    from scipy.ndimage import gaussian_filter

    if k == 1 and sigma_px <= 1.6:
        return _binomial(a.astype(np.float32, copy=False), max(1, round(2 * sigma_px**2)))
    if k == 1:
        return gaussian_filter(a.astype(np.float32, copy=False), sigma_px, truncate=3.0)
    small = Image.fromarray(a.astype(np.float32, copy=False)).resize(
        (max(1, w // k), max(1, h // k)), Image.Resampling.BOX)
    small = gaussian_filter(np.asarray(small), sigma_px / k, truncate=3.0, mode="nearest")
    big = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float32)


def _binomial(a: np.ndarray, passes: int) -> np.ndarray:
    """``passes`` rounds of the [1, 2, 1] / 4 filter on both axes (a Gaussian of variance passes / 2),
    edges replicated; far cheaper than a general Gaussian for the 1-pixel blurs of the detector."""
    out = a
    for _ in range(passes):
        for ax in (0, 1):
            src = out.swapaxes(0, 1) if ax else out
            v = src * np.float32(0.5)
            v[1:] += np.float32(0.25) * src[:-1]
            v[:-1] += np.float32(0.25) * src[1:]
            v[0] += np.float32(0.25) * src[0]
            v[-1] += np.float32(0.25) * src[-1]
            out = v.swapaxes(0, 1) if ax else v
    return np.ascontiguousarray(out, dtype=np.float32)


def thickness(mask: np.ndarray, *radii_px: float, k: int = 4):
    """Path length through a convex body seen edge-on, in [0, 1]: ``sqrt(1 - (1 - d/R)^2)``.

    ``d`` is the distance to the outline, computed on a grid ``k`` times coarser (fast); the
    profile rises steeply at the outline (a crisp but partial-volume edge) and flattens ``R``
    inside it, as an elliptical cross-section does. One profile per radius in ``radii_px``
    (one array for one radius, else a list).
    """
    from scipy.ndimage import distance_transform_edt

    h, w = mask.shape
    k = int(max(1, min(k, max(h, w) // 96)))
    m8 = mask.astype(np.uint8, copy=False)
    if k > 1:
        small = np.asarray(Image.fromarray(m8 * np.uint8(255)).resize(
            (max(1, w // k), max(1, h // k)), Image.Resampling.BOX)) > 127
    else:
        small = m8 > 0
    d = (distance_transform_edt(small).astype(np.float32) + 0.5) * k
    out = []
    for r in radii_px:
        u = np.minimum(d * np.float32(1 / max(r, 1e-3)), 1)
        t = np.sqrt(u * (2 - u))
        if k > 1:
            t = np.asarray(Image.fromarray(t).resize((w, h), Image.Resampling.BILINEAR))
        out.append(t * m8)
    return out[0] if len(out) == 1 else out
