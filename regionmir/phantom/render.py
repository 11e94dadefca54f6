"""Radiograph formation: attenuation map from tissue shapes, then exposure, scatter, noise, processing."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from regionmir.anatomy import Anatomy
from regionmir.phantom import body as anatomy
from regionmir.phantom import findings as fnd
from regionmir.phantom import regionmasks
from regionmir.phantom.patient import Patient, Pose
from regionmir.phantom.raster import ANTERIOR, POSTERIOR, Frame, Raster, arr, smooth
from regionmir.regions import Box

WORKING = 512  # long side of the grid the anatomy is drawn on; smooth, so upsampled after

MU = 0.2  # water, per cm
MU_LUNG = 0.05  # aerated lung, per cm


@dataclass
class Rendered:
    """One rendered exposure."""

    image: np.ndarray  # (H, W) float32 in [0, 1], bright = dense
    boxes: dict[Anatomy, Box]  # output pixels
    masks: dict[Anatomy, np.ndarray]  # working grid
    structures: dict[str, np.ndarray]  # working grid: body, lungs, heart, gastric bubble, ...
    findings: list[fnd.Finding]


@lru_cache(maxsize=4)
def texture_bank(n: int = 256) -> np.ndarray:
    """Band-limited noise fields ``(4, n, n)`` (fixed seed: identical in every process)."""
    rng = np.random.default_rng(12345)
    f = np.fft.fftfreq(n)
    k = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) + 1.0 / n
    out = []
    for slope, lo in ((1.3, 0.0), (1.0, 0.02), (0.6, 0.05), (1.8, 0.0)):
        spec = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) / k**slope
        spec[k < lo] = 0
        t = np.fft.ifft2(spec).real
        out.append((t - t.mean()) / t.std())
    return np.stack(out).astype(np.float32)


def _texture(rng: np.random.Generator, kind: int, h: int, w: int, scale: float) -> np.ndarray:
    """A random tile of texture ``kind`` stretched by ``scale`` to ``(h, w)``."""
    bank = texture_bank()
    n = bank.shape[1]
    t = np.roll(bank[kind], tuple(int(v) for v in rng.integers(0, n, 2)), axis=(0, 1))
    size = (max(1, int(w / scale)), max(1, int(h / scale)))
    tile = np.tile(t, (1 + size[1] // n, 1 + size[0] // n))[: size[1], : size[0]]
    return np.asarray(Image.fromarray(tile).resize((w, h), Image.Resampling.BILINEAR))


def attenuation(p: Patient, pose: Pose, fs: list, rng: np.random.Generator, r: Raster, b, th, m):
    """Line integral of attenuation on the working grid ``(h, w)``."""
    f = r.f
    h, w = f.h, f.w
    px = f.units(1.0)
    cm = p.lung_mm / 10.0  # cm per lung unit
    body = m["body"].astype(np.float32)
    T = p.depth_cm * body * np.sqrt(np.clip(smooth(body, px * 0.18) * 1.6 - 0.25, 0.05, 1))
    lungs = (m["right_lung"] | m["left_lung"]).astype(np.float32)
    lsoft = smooth(lungs, 1.2)
    depth = np.clip(smooth(lungs, px * 0.07) * 1.4, 0, 1) ** 0.6
    L = 0.68 * p.depth_cm * lsoft * depth
    heart = m["heart"].astype(np.float32)
    L = L + 0.18 * p.depth_cm * heart * np.clip(smooth(lungs, px * 0.15) * 2.5, 0, 1)
    L = L * (1 + 0.07 * _texture(rng, 0, h, w, 2.0) + 0.05 * _texture(rng, 2, h, w, 1.0))
    A = MU * T - (MU - MU_LUNG) * L
    # bones: cortical rims brighter than the marrow
    bone = pose.bone
    for layer, dens, depth_ in (("rib_post", 0.32, POSTERIOR), ("rib_ant", 0.13, ANTERIOR)):
        outer = arr(r.lines(b.lines[layer], 1.0, depth_))
        inner = arr(r.lines(b.lines[layer], 1.0, depth_, widen=0.5))
        A += bone * dens * (outer - 0.35 * inner)
    A += bone * 0.55 * _clavicles(r, b)
    A += bone * _spine(r, th, p)
    for side in ("right", "left"):
        sc = arr(r.poly(b.polys[f"{side}_scapula"], 1.0, POSTERIOR))
        A += bone * 0.3 * sc
        hum = arr(r.poly(b.polys[f"{side}_humerus"]))
        A += bone * (0.9 * hum + 0.5 * arr(r.lines([b.lines["humerus"][0 if side == "right" else 1]])))
    # airways: an air column replaces soft tissue
    air = arr(r.lines(b.lines["trachea"], 1.0)) + 0.8 * arr(r.lines(b.lines["bronchi"], 1.0))
    A -= 0.9 * np.clip(air, 0, 1) * body
    m["gastric"] = arr(r.poly(b.polys["gastric"])) > 0
    A -= MU * 4.0 * m["gastric"]
    A += 0.06 * m["aorta"]
    for k in (-1, 1):
        if f"breast_{k}" in b.polys:
            br = arr(r.poly(b.polys[f"breast_{k}"], 1.0, ANTERIOR))
            low = arr(r.poly(b.polys[f"breast_{k}"] + np.array([0, 0.12]), 1.0, ANTERIOR))
            A += MU * 2.5 * p.breasts * br * np.clip(smooth(low, px * 0.1) * 1.6, 0, 1)
    # vessels and markings, fading to the periphery; findings
    delta, clear = fnd.draw(fs, b, th, r, lsoft, _texture(rng, 0, h, w, 2.0))
    A += _vessels(p, b, r, cm) * lsoft * (1 - clear) + delta
    return smooth(A, 1.0) * (1 + 0.02 * _texture(rng, 1, h, w, 6.0)), body


def _clavicles(r: Raster, b) -> np.ndarray:
    outer = arr(r.lines(b.lines["clavicle"], 1.0, ANTERIOR))
    inner = arr(r.lines(b.lines["clavicle"], 1.0, ANTERIOR, widen=0.55))
    return outer - 0.3 * inner


def _spine(r: Raster, th, p: Patient) -> np.ndarray:
    """Vertebral bodies, end plates, pedicles and spinous processes (faint through the heart)."""
    im, d = r.new()
    y, k = -0.4, 0
    while y < 1.4:
        gap = p.rib_gap * (1 + 0.03 * k)
        x = p.scoliosis * np.sin(np.pi * y)
        hw = 0.045 + 0.01 * min(1.0, max(0.0, y))
        a = np.linspace(0, 2 * np.pi, 24)
        body_ = np.stack([x + hw * np.sign(np.cos(a)) * np.abs(np.cos(a)) ** 0.3,
                          y + 0.4 * gap * np.sign(np.sin(a)) * np.abs(np.sin(a)) ** 0.3], 1)
        r.poly(body_, 0.3, POSTERIOR, into=(im, d))
        for sx in (-1, 1):
            ped = anatomy.ellipse(x + sx * (hw - 0.012), y - 0.15 * gap, 0.01, 0.018, 12)
            r.poly(ped, 0.5, POSTERIOR, into=(im, d))
        r.poly(anatomy.ellipse(x, y + 0.3 * gap, 0.008, 0.02, 12), 0.4, POSTERIOR, into=(im, d))
        y, k = y + gap, k + 1
    return arr(im)


def _vessels(p: Patient, b, r: Raster, cm: float) -> np.ndarray:
    """Pulmonary vessels branching from the hila (drawn thinner and fainter toward the periphery)."""
    im, d = r.new()
    for s, side in ((-1, "right"), (1, "left")):
        hx, hy = b.points[f"{side}_hilum"]
        tree = anatomy.vessel_tree(p.seed, s)
        segs = np.concatenate([seg for seg, _ in tree]) + np.array([hx, hy])  # (2n, 2)
        q = r.f(segs).reshape(-1, 4).tolist()
        for (x1, y1, x2, y2), (_, width) in zip(q, tree):
            wpx = max(1, int(round(r.f.units(width))))
            d.line((x1, y1, x2, y2), fill=MU * width * cm * 6.0, width=wpx)
        r.disc((hx + s * 0.03, hy + 0.02), 0.035, 0.5, into=(im, d))
        r.disc((hx + s * 0.02, hy - 0.04), 0.025, 0.4, into=(im, d))
    return arr(im)


@lru_cache(maxsize=1)
def noise_bank(n: int = 1 << 22) -> np.ndarray:
    """Unit Gaussian noise reused at random offsets (same in every process)."""
    return np.random.default_rng(54321).standard_normal(n, dtype=np.float32)


def _detector(I: np.ndarray, pose: Pose, r: Raster) -> np.ndarray:
    """Collimation (unexposed border) and the lead side marker."""
    h, w = I.shape
    cl, ct, cr, cb = pose.collimation
    open_ = np.zeros_like(I)
    open_[int(ct * h): h - int(cb * h), int(cl * w): w - int(cr * w)] = 1
    I = I * (0.02 + 0.98 * open_)
    if pose.marker:
        im = Image.new("F", (w, h), 0.0)
        font = ImageFont.load_default(size=max(8, int(h * 0.045)))
        side = 1 if pose.marker == "L" else -1  # the patient's side, image right for "L"
        x = w / 2 + side * w * 0.38 - h * 0.02
        ImageDraw.Draw(im).text((x, h * (0.06 + ct)), pose.marker, fill=1.0, font=font)
        I = I * (1 - 0.95 * np.asarray(im))
    return I


def render(p: Patient, pose: Pose, fs: list, rng: np.random.Generator) -> Rendered:
    """Render one exposure of ``p`` with findings ``fs`` at the pose's output size."""
    H, W = pose.height, pose.width
    k = max(1.0, max(H, W) / WORKING)
    h, w = max(8, round(H / k)), max(8, round(W / k))
    f = Frame(p, pose, h, w)
    r = Raster(f)
    b = anatomy.build(p, pose)
    th = anatomy.Thorax(p, pose)
    m = regionmasks.structures(b, th, r)
    masks = regionmasks.regions(b, th, r, m)
    A, body = attenuation(p, pose, fs, rng, r, b, th, m)
    boxes = regionmasks.boxes(masks, W, H, lambda a: _fallback(a, W, H))
    return Rendered(_form(A, body, pose, rng, r), boxes, masks, m, fs)


def _fallback(a: Anatomy, W: int, H: int) -> Box:
    """A small box at the image centre for a region projected wholly outside the image."""
    return Box(W / 2 - 2, H / 2 - 2, W / 2 + 2, H / 2 + 2)


def _form(A: np.ndarray, body: np.ndarray, pose: Pose, rng, r: Raster) -> np.ndarray:
    """Exposure -> scatter -> detector -> log -> processing -> quantum noise -> tone curve."""
    h, w = A.shape
    ang = rng.uniform(0, 2 * np.pi)
    xs = (np.arange(w, dtype=np.float32) / w - 0.5) * np.cos(ang)
    ys = (np.arange(h, dtype=np.float32) / h - 0.5) * np.sin(ang)
    heel = 1 + 0.12 * (xs[None, :] + ys[:, None])  # anode heel effect
    Ip = np.exp(-A) * heel
    S = pose.scatter * smooth(Ip * (0.25 + 0.75 * body), r.f.units(0.12)) * 0.5
    S += pose.scatter * 0.5 * smooth(Ip * body, r.f.units(0.04))
    It = _detector(Ip + S, pose, r)
    D = -np.log(It + 1e-4)
    D = D + pose.sharpen * (D - smooth(D, r.f.units(0.04)))
    inside = D[(body > 0.5)]
    sample = inside[:: max(1, inside.size // 20000)] if inside.size else D.ravel()
    lo, hi = np.quantile(sample, (0.01, 0.995))
    lo = max(lo - 0.12 * (hi - lo) * rng.uniform(0.0, 1.0), float(D.min()))
    P = np.clip((D - lo) / max(hi - lo, 1e-3), 0, 1) ** pose.gamma
    sig = (1 + pose.sharpen) / np.sqrt(pose.photons * np.clip(It, 1e-4, None)) / max(hi - lo, 1e-3)
    H, W = pose.height, pose.width
    if (H, W) != (h, w):
        P = np.asarray(Image.fromarray(P.astype(np.float32)).resize((W, H), Image.Resampling.BILINEAR))
        sig = np.asarray(Image.fromarray(sig.astype(np.float32)).resize((W, H), Image.Resampling.BILINEAR))
    bank = noise_bank()
    start = int(rng.integers(0, bank.size - H * W)) if bank.size > H * W else 0
    noise = bank[start:start + H * W].reshape(H, W) if bank.size >= H * W else \
        rng.standard_normal((H, W), dtype=np.float32)
    out = np.clip(P + noise * np.minimum(sig, 0.2), 0, 1)
    if pose.shutter_black:
        cl, ct, cr, cb = pose.collimation
        mask = np.ones((H, W), bool)
        mask[int(ct * H): H - int(cb * H), int(cl * W): W - int(cr * W)] = False
        out[mask] = 0
    return out.astype(np.float32)
