"""Radiograph formation: the attenuation map of the patient (tissue thickness profiles, bones,
vessels, gas, findings), then the detector stage (detector.py) makes the image."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from regionmir.anatomy import Anatomy
from regionmir.phantom import body as anatomy
from regionmir.phantom import detector, devices, regionmasks
from regionmir.phantom import findings as fnd
from regionmir.phantom.patient import Patient, Pose
from regionmir.phantom.raster import ANTERIOR, POSTERIOR, Frame, Raster, arr, smooth, thickness
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
    devices: list[str]  # support devices on the film: "ecg", "ett", "enteric", "central"


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


@lru_cache(maxsize=2)
def markings_bank(n: int = 512) -> np.ndarray:
    """``(n, n)`` tile of fine, short, blurred vessel segments (lung markings beyond the drawn
    trees), mostly running up-down; fixed seed, so identical in every process."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2468)
    im = Image.new("F", (n, n), 0.0)
    d = ImageDraw.Draw(im)
    k = 2600
    x, y = rng.uniform(0, n, k), rng.uniform(0, n, k)
    ang = np.pi / 2 + rng.normal(0, 0.7, k)
    ln = rng.uniform(3, 12, k)
    val = rng.uniform(0.3, 1.0, k)
    for x0, y0, a, l, v in zip(x, y, ang, ln, val):
        d.line((x0, y0, x0 + l * np.cos(a), y0 + l * np.sin(a)), fill=float(v), width=1)
    t = gaussian_filter(np.asarray(im, np.float32), 0.6, mode="wrap")
    return (t / t.max()).astype(np.float32)


def _markings(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random window of the markings tile, scaled as on a 512-pixel working grid."""
    bank = markings_bank()
    n = bank.shape[0]
    t = np.roll(bank, tuple(int(v) for v in rng.integers(0, n, 2)), axis=(0, 1))
    scale = max(h, w) / WORKING
    if abs(scale - 1) < 0.02:
        return np.tile(t, (1 + h // n, 1 + w // n))[:h, :w]
    hs, ws = max(1, round(h / scale)), max(1, round(w / scale))
    tile = np.tile(t, (1 + hs // n, 1 + ws // n))[:hs, :ws]
    return np.asarray(Image.fromarray(tile).resize((w, h), Image.Resampling.BILINEAR))


def _texture(rng: np.random.Generator, kind: int, h: int, w: int, scale: float) -> np.ndarray:
    """A random tile of texture ``kind`` stretched by ``scale`` to ``(h, w)``."""
    bank = texture_bank()
    n = bank.shape[1]
    t = np.roll(bank[kind], tuple(int(v) for v in rng.integers(0, n, 2)), axis=(0, 1))
    size = (max(1, int(w / scale)), max(1, int(h / scale)))
    tile = np.tile(t, (1 + size[1] // n, 1 + size[0] // n))[: size[1], : size[0]]
    return np.asarray(Image.fromarray(tile).resize((w, h), Image.Resampling.BILINEAR))


def attenuation(p: Patient, pose: Pose, fs: list, rng: np.random.Generator, r: Raster, b, th, m):
    """Line integral of attenuation on the working grid ``(h, w)``.

    Soft tissue, lungs, heart and arms are thickness profiles of convex bodies (partial-volume
    edges, density growing away from the outline), not flat masks.
    """
    f = r.f
    h, w = f.h, f.w
    px = f.units(1.0)
    cm = p.lung_mm / 10.0  # cm per lung unit
    tex0, tex2 = _texture(rng, 0, h, w, 2.0), _texture(rng, 2, h, w, 1.0)
    torso = m["torso"]
    A = MU * p.depth_cm * thickness(torso, px * (0.3 + p.soft))
    A += MU * _arms(r, b, p, px, cm)
    air = (MU - MU_LUNG) * _lungs(p, f, m, px, tex0, tex2, th.base)  # what the lungs' air removes
    A -= air
    A += 0.1 * m["aorta"]  # descending aorta: a faint stripe left of the spine
    bones = _bones(r, b, th, p, m)
    A += pose.bone * bones * (1 + 0.25 * tex2)
    # airways and gas: air columns replace soft tissue
    tube = r.lines(b.lines["bronchi"], 0.8)
    tube = arr(r.lines(b.lines["trachea"], 1.0, into=(tube, ImageDraw.Draw(tube))))
    lungs = m["right_lung"] | m["left_lung"]
    A -= 0.8 * tube * (torso & ~lungs) * np.clip(1 - 3 * m["lung_depth"], 0, 1)  # air in air: invisible
    m["gastric"] = r.mask(b.polys["gastric"])
    A -= MU * 3.4 * m["gastric"] * (0.85 + 0.15 * tex2)  # fundus air over rugal folds
    A -= MU * 2.2 * _bowel(r, p, th, m, tex2)
    if p.breasts > 0:
        A += MU * 1.8 * p.breasts * _breasts(r, b, p, px)
    # vessels and markings, fading to the periphery; findings
    lsoft = smooth(lungs.astype(np.float32), 1.2)
    delta, clear = fnd.draw(fs, b, th, r, lsoft, tex0, air)
    vs, hila = _vessels(p, b, r, cm)
    vs += 1.1 * _markings(rng, h, w) * (0.6 + 0.5 * np.clip(_rows(f), 0, 1))
    A += (vs * m["lung_depth"] + hila) * (1 - clear) + delta
    return smooth(A, 1.1) * (1 + 0.02 * tex0), m["body"].astype(np.float32)


def _rows(f: Frame) -> np.ndarray:
    """Height of each working-grid row in lung units ``(h, 1)`` (apex 0, costophrenic angle 1),
    ignoring the small in-plane tilt."""
    return ((np.arange(f.h, dtype=np.float32) - f.cy) / (f.s * f.insp))[:, None]


def _lungs(p: Patient, f: Frame, m, px: float, tex0, tex2, base: float) -> np.ndarray:
    """Aerated lung path length ``(h, w)`` in cm: thick centrally, thinning to the pleura, behind
    the heart and into the posterior costophrenic recesses below the domes; a little denser at the
    bases, shallow at the apices. Also stores ``m["lung_depth"]`` (relative depth in [0, 1], which
    weights the vessels)."""
    lungs = m["right_lung"] | m["left_lung"]
    heart = m["heart"]
    wide = heart.copy()  # the twist moves the heart sideways; lung fills the gap it leaves
    for i in range(1, int(abs(f.twist) * ANTERIOR * f.s) + 2):
        wide[:, i:] |= heart[:, :-i]
        wide[:, :-i] |= heart[:, i:]
    env = thickness(lungs | wide, px * 0.16)  # lung wraps round the heart; thins toward the pleura
    hp, hc = thickness(heart, px * 0.05, px * 0.22)
    y = _rows(f)
    fade = np.clip((base - 0.02 - y) / 0.15, 0, 1)  # retrocardiac lung ends above the diaphragm
    behind = (1 - hp + hp * (0.42 - 0.34 * hc)) * fade  # the heart displaces most lung, most centrally
    frac = np.where(heart, behind, np.where(lungs, 1, fade))
    aer = (1.04 - 0.12 * np.clip(y, 0, 1)) * (0.6 + 0.4 * np.clip(y / 0.25, 0, 1) ** 0.8)  # apex cone
    depth = env * frac
    shift = max(1, int(px * 0.07))
    below = np.zeros(lungs.shape, np.float32)
    below[shift:] = lungs[:-shift]
    depth += 0.2 * smooth(below, px * 0.05) * m["abdomen"]  # posterior recesses behind the domes
    m["lung_depth"] = np.clip(env * (1 - hp * 0.8), 0, 1)
    return 0.72 * p.depth_cm * depth * aer * (1 + 0.045 * tex0 + 0.03 * tex2)


def _arms(r: Raster, b, p: Patient, px: float, cm: float) -> np.ndarray:
    """Upper arms as cylinders: path length (cm) grows from the skin line to the centre."""
    im = r.new("L")
    for k in (-1, 1):
        r.poly(b.polys[f"arm_{k}"], 1, into=im)
    rx = 0.12 + 0.5 * p.soft
    return 2 * rx * cm * 0.8 * thickness(np.asarray(im[0]) > 0, px * rx)


def _breasts(r: Raster, b, p: Patient, px: float) -> np.ndarray:
    """Breast shadows over the lower zones: a crisp inferolateral contour, fading upward."""
    im = r.new("L")
    for k in (-1, 1):
        r.poly(b.polys[f"breast_{k}"], 1, ANTERIOR, into=im)
    cy = float(b.polys["breast_1"][:, 1].mean())
    up = np.clip((_rows(r.f) - (cy - 0.12 * p.breasts)) / (0.2 * p.breasts), 0, 1) ** 1.5
    return thickness(np.asarray(im[0]) > 0, px * 0.12 * p.breasts) * up


def _bowel(r: Raster, p: Patient, th, m, tex2) -> np.ndarray:
    """Gas pockets of the colon below the diaphragm, mottled by stool."""
    im, d = r.new()
    for pts, dark in anatomy.bowel_gas(p.seed, th):
        r.poly(pts, dark, into=(im, d))
    gas = arr(im) * m["abdomen"]
    return gas * np.clip(0.75 + 0.35 * tex2, 0.2, 1.2)


def _bones(r: Raster, b, th, p: Patient, m) -> np.ndarray:
    """Ribs, clavicles, spine, scapulae and humeri: cortical rims denser than the marrow.

    Each bone is drawn whole, then its marrow over it (a lower value), into a few layers: the
    posterior ribs, the anterior ribs (which add where they cross) and the other bones.
    """
    f = r.f
    xu = np.abs((np.arange(f.w, dtype=np.float32) - f.cx) / f.s)[None, :]  # (1, w) |x| in lung units
    ribs = []
    for layer, dens, depth_ in (("rib_post", 0.3, POSTERIOR), ("rib_ant", 0.12, ANTERIOR)):
        im = r.lines(b.lines[layer], dens, depth_)
        ribs.append(arr(r.lines(b.lines[layer], dens * 0.5, depth_, widen=0.55, into=(im, ImageDraw.Draw(im)))))
    B = (ribs[0] + ribs[1]) * np.clip((xu - 0.04) / 0.2, 0.3, 1)
    B *= 1 - 0.6 * m["abdomen"] - 0.35 * m["heart"]
    im, d = r.new()
    for k, side in enumerate(("right", "left")):
        r.poly(b.polys[f"{side}_scapula"], 0.2, POSTERIOR, into=(im, d))
        head = b.polys[f"{side}_humerus"]
        c = head.mean(0)
        shaft = [b.lines["humerus"][k]]
        r.lines(shaft, 0.36, into=(im, d))
        r.lines(shaft, 0.2, widen=0.5, into=(im, d))
        r.poly(head, 0.55, into=(im, d))
        r.poly(c + (head - c) * 0.85, 0.45, into=(im, d))
    clav = b.lines["clavicle"]
    r.lines(clav, 0.45, ANTERIOR, into=(im, d))
    r.lines(clav, 0.3, ANTERIOR, widen=0.55, into=(im, d))
    _spine(r, th, p, (im, d))
    return B + arr(im) * (1 - 0.35 * m["abdomen"] - 0.25 * m["heart"])


def _spine(r: Raster, th, p: Patient, into) -> None:
    """Vertebral bodies with end plates, pedicles (rings) and spinous processes."""
    r.lines([(regionmasks.spine_path(th), 0.09)], 0.1, POSTERIOR, into=into)
    y, k = -0.4, 0
    a = np.linspace(0, 2 * np.pi, 24)
    ca, sa = np.sign(np.cos(a)) * np.abs(np.cos(a)) ** 0.3, np.sign(np.sin(a)) * np.abs(np.sin(a)) ** 0.3
    while y < 1.4:
        gap = p.rib_gap * (1 + 0.03 * k)
        x = p.scoliosis * np.sin(np.pi * y)
        hw = 0.045 + 0.01 * min(1.0, max(0.0, y))
        for f_, v in ((1.0, 0.28), (0.8, 0.22)):  # cortex, then cancellous bone inside
            body_ = np.stack([x + f_ * hw * ca, y + f_ * 0.44 * gap * sa], 1)
            r.poly(body_, v, POSTERIOR, into=into)
        for sx in (-1, 1):
            for f_, v in ((1.0, 0.36), (0.55, 0.26)):
                ped = anatomy.ellipse(x + sx * (hw - 0.012), y - 0.15 * gap, 0.011 * f_, 0.019 * f_, 12)
                r.poly(ped, v, POSTERIOR, into=into)
        r.poly(anatomy.ellipse(x, y + 0.3 * gap, 0.008, 0.02, 12), 0.36, POSTERIOR, into=into)
        y, k = y + gap, k + 1


def _vessels(p: Patient, b, r: Raster, cm: float) -> np.ndarray:
    """Pulmonary vessels branching from the hila, tapering, blurred, denser toward the bases;
    and the hilar vessels themselves. Returns ``(vessels, hila)``, each ``(h, w)``."""
    im, d = r.new()
    for s, side in ((-1, "right"), (1, "left")):
        hx, hy = b.points[f"{side}_hilum"]
        segs, widths = anatomy.vessel_tree(p.seed, s)  # (n, 3, 2), (n,)
        q = r.f(segs.reshape(-1, 2) + np.array([hx, hy])).reshape(-1, 6).tolist()
        wpx = np.maximum(1, np.rint(r.f.units(widths))).astype(int).tolist()
        fill = (MU * cm * 8.0 * widths).tolist()
        for pts, wp, v in zip(q, wpx, fill):
            d.line(pts, fill=v, width=wp)
    hi, dh = r.new()
    for s, side in ((-1, "right"), (1, "left")):
        hx, hy = b.points[f"{side}_hilum"]
        r.disc((hx + s * 0.04, hy + 0.03), 0.04, 0.35, into=(hi, dh))
        r.disc((hx + s * 0.035, hy - 0.04), 0.03, 0.3, into=(hi, dh))
    base = 0.75 + 0.4 * np.clip(_rows(r.f), 0, 1.1)
    return arr(im) * base, smooth(arr(hi), max(4.0, r.f.units(0.015)))


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
    # devices draw from a child generator: the rest of the film is the same with or without them
    dev = devices.sample(pose.view, b.lines["trachea"][0][0], th.carina, th.top, b.polys["gastric"],
                         th.W, rng.spawn(1)[0])
    if dev.kinds:
        A = A + smooth(devices.draw(dev, r), 0.6)
    boxes = regionmasks.boxes(masks, W, H, lambda a: _fallback(a, W, H))
    lungs = m["right_lung"] | m["left_lung"]
    return Rendered(detector.form(A, body, pose, rng, r, lungs), boxes, masks, m, fs, dev.kinds)


def _fallback(a: Anatomy, W: int, H: int) -> Box:
    """A small box at the image centre for a region projected wholly outside the image."""
    return Box(W / 2 - 2, H / 2 - 2, W / 2 + 2, H / 2 + 2)
