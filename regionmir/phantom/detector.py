"""Image formation behind the patient: exposure, scatter, collimation, exposure control,
detector noise and blur, and the processing (range compression, unsharp mask, tone curve)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from regionmir.phantom.patient import Pose
from regionmir.phantom.raster import Raster, smooth


@lru_cache(maxsize=1)
def noise_bank(n: int = 1 << 22) -> np.ndarray:
    """Unit noise reused at random offsets (same in every process), correlated along a row
    like the detector's blur correlates it; rows are paired in ``_noise``."""
    z = np.random.default_rng(54321).standard_normal(n + 2, dtype=np.float32)
    return ((z[:-2] + 0.6 * z[1:-1] + 0.2 * z[2:]) / np.float32(np.sqrt(1.4))).astype(np.float32)


NOISE_GAIN = np.float32(1 / np.sqrt(1.25))  # makes ``_noise`` unit variance


def _noise(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """``(H, W)`` noise of variance 1 / NOISE_GAIN^2, correlated across rows and columns (MTF);
    a fresh writable array."""
    bank = noise_bank()
    if bank.size < H * W + W:
        return rng.standard_normal((H, W), dtype=np.float32) / NOISE_GAIN
    start = int(rng.integers(0, bank.size - H * W - W))
    n = bank[start + W:start + W + H * W] * np.float32(0.5)  # the next row's, so rows correlate
    n += bank[start:start + H * W]
    return n.reshape(H, W)


def _open(h: int, w: int, pose: Pose) -> np.ndarray:
    """Exposed field of the collimator: 1 inside, 0 outside, edges ~1.5 pixels soft."""
    cl, ct, cr, cb = pose.collimation

    def ramp(n: int, c0: float, c1: float) -> np.ndarray:
        t = np.arange(n, dtype=np.float32) + 0.5
        lo = np.clip((t - c0 * n) / 1.5 + 0.5, 0, 1) if c0 > 0 else 1.0
        hi = np.clip(((1 - c1) * n - t) / 1.5 + 0.5, 0, 1) if c1 > 0 else 1.0
        return np.ones(n, np.float32) * lo * hi

    return ramp(h, ct, cb)[:, None] * ramp(w, cl, cr)[None, :]


def _detector(I: np.ndarray, pose: Pose, open_: np.ndarray) -> np.ndarray:
    """Collimation (unexposed border, scatter only) and the lead side marker."""
    h, w = I.shape
    I = I * (0.02 + 0.98 * open_)
    if pose.marker:
        im = Image.new("F", (w, h), 0.0)
        font = ImageFont.load_default(size=max(8, int(h * 0.045)))
        side = 1 if pose.marker == "L" else -1  # the patient's side, image right for "L"
        x = w / 2 + side * w * 0.38 - h * 0.02
        ImageDraw.Draw(im).text((x, h * (0.06 + pose.collimation[1])), pose.marker, fill=1.0, font=font)
        I = I * (1 - 0.95 * np.asarray(im))
    return I


def _normalise(D: np.ndarray, inside: np.ndarray, lungs: np.ndarray, rng, lift: float = 0.2) -> tuple[np.ndarray, float]:
    """Window of the processing: the lungs land in the straight part, dense tissue near the shoulder."""
    vals = D[inside] if inside.any() else D.ravel()
    lv = D[lungs & inside] if (lungs & inside).sum() > 16 else vals
    hi = float(np.quantile(vals[:: max(1, vals.size // 20000)], 0.998))
    lo = float(np.quantile(lv[:: max(1, lv.size // 20000)], 0.01))
    span = max(hi - lo, 1e-3)
    lo -= span * lift * rng.uniform(0.8, 1.2)
    hi += span * rng.uniform(0.1, 0.6)  # headroom: dense parts grey rather than white on many looks
    return (D - lo) / (hi - lo), hi - lo


@lru_cache(maxsize=64)
def _tone_lut(gamma: float, n: int = 4096) -> np.ndarray:
    """Film-like characteristic curve (toe, straight part, shoulder) sampled on [0, 1]."""
    x = np.linspace(0, 1, n, dtype=np.float64)
    y = 0.5 + 0.5 * np.tanh(2.0 * (x - 0.5)) / np.tanh(1.0)
    return (y ** gamma).astype(np.float32)


def _tone(x: np.ndarray, gamma: float) -> np.ndarray:
    """The characteristic curve at ``x`` (clipped to [0, 1]), by table look-up."""
    lut = _tone_lut(round(float(gamma), 3))
    idx = np.clip(x * (lut.size - 1), 0, lut.size - 1).astype(np.int32)
    return lut[idx]


def _equalized(P: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``P`` through the cumulative histogram of its values inside the body."""
    vals = P[inside] if inside.sum() > 64 else P.ravel()
    qs = np.quantile(vals[:: max(1, vals.size // 20000)], np.linspace(0, 1, 65))
    return np.interp(P, np.maximum.accumulate(qs), np.linspace(0, 1, 65)).astype(np.float32)


def form(A: np.ndarray, body: np.ndarray, pose: Pose, rng, r: Raster, lungs: np.ndarray) -> np.ndarray:
    """Exposure -> scatter -> detector -> log -> processing -> quantum noise -> tone curve.

    Quantum noise is Poisson-like: its spread in the log image is 1/sqrt(quanta), with the quanta
    set by automatic exposure control on the lung fields; it then passes through the processing
    and the tone curve, so saturated areas (collimated border, direct exposure) are quiet.
    """
    h, w = A.shape
    ang = rng.uniform(0, 2 * np.pi)
    xs = (np.arange(w, dtype=np.float32) / w - 0.5) * np.cos(ang)
    ys = (np.arange(h, dtype=np.float32) / h - 0.5) * np.sin(ang)
    heel = 1 + 0.12 * (xs[None, :] + ys[:, None])  # anode heel effect
    Ip = np.exp(-A) * heel
    S = pose.scatter * smooth(Ip * (0.25 + 0.75 * body), r.f.units(0.12))
    S += pose.scatter * 0.6 * smooth(Ip * body, r.f.units(0.04))
    open_ = _open(h, w, pose)
    It = _detector(Ip + S, pose, open_)
    sel = It[lungs] if lungs.sum() > 16 else It[body > 0.5] if (body > 0.5).any() else It.ravel()
    ref = float(np.median(sel[:: max(1, sel.size // 20000)]))
    quanta = pose.photons * np.maximum(It, 1e-4) / max(ref, 1e-4)  # AEC: lungs get pose.photons
    D = -np.log(It + 1e-4)
    inside = body > 0.5
    sel = D[inside & (open_ > 0.99)]
    mid = float(np.median(sel[:: max(1, sel.size // 20000)])) if sel.size else float(np.median(D))
    Dx = D * open_ + (1 - open_) * mid  # the processing ignores the collimated border
    D = D - pose.drc * (smooth(Dx, r.f.units(0.55)) - mid)  # dynamic range compression
    D = D + pose.sharpen * (D - smooth(Dx, r.f.units(0.04)))  # unsharp mask
    x, span = _normalise(D, inside & (open_ > 0.99), lungs, rng, pose.lift)
    x = np.maximum(x, (1 - open_) * rng.uniform(0.95, 1.2))  # collimated border: light, quiet
    P = _tone(x, pose.gamma)
    dx = (1 + 0.5 * pose.sharpen) / np.sqrt(quanta) / span
    sig = (np.abs(_tone(x + dx, pose.gamma) - P) + 0.002) * (0.25 + 0.75 * open_)
    sig = np.minimum(sig, 0.12) * NOISE_GAIN
    H, W = pose.height, pose.width
    if (H, W) != (h, w):
        P = np.asarray(Image.fromarray(P.astype(np.float32)).resize((W, H), Image.Resampling.BILINEAR))
        sig = np.asarray(Image.fromarray(sig.astype(np.float32)).resize((W, H), Image.Resampling.BILINEAR))
    out = _noise(rng, H, W)  # (H, W), in place from here on: these are the big arrays
    out *= sig
    out += P
    if pose.equalize > 0:  # some sites equalize the histogram of the (noisy) film
        out = (1 - pose.equalize) * out + pose.equalize * _equalized(out, out > 0.02)
    if pose.blur > 0.3:  # soft detectors, resampled or re-photographed films
        from scipy.ndimage import gaussian_filter

        out = gaussian_filter(out, pose.blur, truncate=2.5)
    np.clip(out, 0, 1, out=out)
    if pose.shutter_black:
        cl, ct, cr, cb = pose.collimation
        mask = np.ones((H, W), bool)
        mask[int(ct * H): H - int(cb * H), int(cl * W): W - int(cr * W)] = False
        out[mask] = 0
    return out
