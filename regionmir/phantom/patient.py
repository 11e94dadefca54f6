"""Sampled patient geometry (fixed per patient) and per-image pose and acquisition settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from regionmir.phantom import shapemodel

_GIVEN_F = ("ANNA", "MARIA", "JUDITH", "LINDA", "GRACE", "ROSA", "EMMA", "HELEN", "IRIS", "NORA")
_GIVEN_M = ("JOHN", "PETER", "OMAR", "LUCAS", "DAVID", "KARL", "MARTIN", "SAMUEL", "IVAN", "LEO")
_FAMILY = ("PHANTOM", "SYNTHE", "TESTER", "MODEL", "SAMPLE", "DUMMY", "MOCK", "VIRTUAL")

# Output sizes (width, height) seen in MIMIC-CXR; scaled so the long side equals --size.
_SIZES = ((2544, 3056), (2544, 3056), (3056, 2544), (2539, 3050), (2048, 2500), (2832, 2836))
_SIZE_P = (0.35, 0.15, 0.2, 0.1, 0.1, 0.1)


@dataclass(frozen=True)
class Patient:
    """Anatomy of one synthetic patient in lung units (apex to costophrenic angle = 1).

    x is positive toward the patient's LEFT (the image's right in PA/AP), y grows downward.
    """

    index: int
    subject_id: str  # 1XXXXXXX, as MIMIC-CXR
    name: str  # DICOM PN; never written to scene graphs
    sex: str  # "F" / "M"
    birth: dt.date
    lung_mm: float  # apex to costophrenic angle at full inspiration
    width: float  # half-width of the thorax at the costophrenic angles
    ctr: float  # cardiothoracic ratio (> 0.52: enlarged cardiac silhouette)
    heart_y: float  # top of the cardiac silhouette
    dome_r: float  # right hemidiaphragm dome height
    dome_l: float  # left hemidiaphragm dome height (lower)
    knob: float  # aortic knob bulge
    soft: float  # lateral soft tissue thickness
    depth_cm: float  # antero-posterior chest depth
    breasts: float  # 0: none visible
    scoliosis: float
    rib_gap: float  # posterior rib spacing
    seed: int  # for vessel trees and other fixed texture
    shape: tuple[float, ...] = ()  # shape-model scores of lungs and heart (shapemodel.py); () = drawn outlines


@dataclass(frozen=True)
class Pose:
    """One exposure: position, breathing, view and detector settings."""

    view: str  # "PA" / "AP"
    width: int  # output pixels
    height: int
    spacing_mm: float  # detector pixel spacing at output size
    shift_mm: tuple[float, float]  # patient centre offset from the detector centre
    tilt_deg: float  # in-plane rotation
    twist: float  # axial rotation: anterior structures move sideways vs. the spine
    insp: float  # inspiration: vertical scale of the thorax (1 = full)
    photons: float  # quanta per pixel (noise)
    scatter: float  # scatter-to-primary fraction
    bone: float  # bone contrast (low kVp: high)
    gamma: float
    sharpen: float  # unsharp-mask gain of the processing
    collimation: tuple[float, float, float, float]  # fractions cut at left, top, right, bottom
    shutter_black: bool  # processing blackened the collimated border
    marker: str | None  # "L"/"R" lead marker or None
    modality: str  # "CR" / "DX"
    photometric: str  # "MONOCHROME1" / "MONOCHROME2"
    bits: int  # BitsStored
    compression: str | None  # None, "rle", "j2k"
    window: bool  # write WindowCenter/Width
    date: dt.date
    framing: tuple[float, float, float] | None = None  # lung apex y, apex-to-base height, midline x (film fractions)
    drc: float = 0.5  # dynamic range compression of the processing (0: none)
    lift: float = 0.2  # window margin below the darkest lung, in window spans: high = grey lungs
    equalize: float = 0.0  # share of histogram equalization blended into the tone curve
    blur: float = 0.0  # extra detector / resampling blur in output pixels


def sample_patient(rng: np.random.Generator, index: int, subject_id: str) -> Patient:
    """Draw one patient: size, habitus, heart, diaphragm, age, sex; lung and heart outlines from
    the shape model fitted on real contours (width and domes are then measured on them)."""
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(np.clip(rng.normal(62, 16), 19, 95))
    habitus = rng.normal(0.0, 1.0)  # < 0 slender and long, > 0 broad
    big_heart = rng.random() < 0.18
    ctr = rng.uniform(0.55, 0.66) if big_heart else np.clip(rng.normal(0.46, 0.025), 0.41, 0.51)
    scores = shapemodel.sample_scores(rng)
    geo = shapemodel.geometry(shapemodel.shapes(scores))
    given = _GIVEN_F if sex == "F" else _GIVEN_M
    birth = dt.date(2150 - age, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    return Patient(
        index=index, subject_id=subject_id,
        name=f"{_FAMILY[rng.integers(len(_FAMILY))]}^{given[rng.integers(len(given))]}",
        sex=sex, birth=birth,
        lung_mm=float(rng.normal(250 if sex == "M" else 232, 14) - 8 * habitus),
        width=geo["width"], ctr=float(ctr), heart_y=geo["heart_top"],
        dome_r=geo["dome_r"], dome_l=max(geo["dome_l"], geo["dome_r"] + 0.01),
        knob=float(np.clip(0.025 + 0.0006 * (age - 40) + rng.normal(0, 0.01), 0.01, 0.07)),
        soft=float(np.clip(0.06 + 0.03 * habitus + rng.normal(0, 0.02), 0.025, 0.16)),
        depth_cm=float(np.clip(rng.normal(21, 2.5) + 1.5 * habitus, 15, 30)),
        breasts=float(rng.uniform(0.5, 1.2)) if sex == "F" and rng.random() < 0.75 else 0.0,
        scoliosis=float(rng.normal(0, 0.012)),
        rib_gap=float(rng.normal(0.092, 0.005)),
        seed=int(rng.integers(2**31)), shape=scores,
    )


def sample_pose(
    rng: np.random.Generator, size: int, date: dt.date, base: dict | None = None
) -> Pose:
    """Draw one exposure. ``base`` (per patient) keeps the detector habits of its site."""
    base = base or {}
    view = "AP" if rng.random() < 0.3 else "PA"
    k = rng.choice(len(_SIZES), p=_SIZE_P)
    w0, h0 = _SIZES[k]
    scale = size / max(w0, h0)
    width, height = max(16, round(w0 * scale)), max(16, round(h0 * scale))
    spacing = 0.139 / scale  # MIMIC detectors: 0.139 mm at ~3000 px
    ap = view == "AP"
    coll = tuple(float(c) for c in (rng.uniform(0, 0.08, 4) * (rng.random(4) < 0.6)))
    return Pose(
        view=view, width=width, height=height, spacing_mm=spacing,
        shift_mm=(float(rng.normal(0, 10)), float(rng.normal(0, 12) + (8 if ap else 0))),
        tilt_deg=float(rng.normal(0, 2.0 if ap else 1.0)),
        twist=float(rng.normal(0, 0.02 if ap else 0.01)),
        insp=float(np.clip(rng.normal(0.88 if ap else 0.98, 0.04), 0.75, 1.06)),
        photons=float(rng.uniform(600, 2500) * (0.7 if ap else 1.0)),
        scatter=float(rng.uniform(0.15, 0.4) * (1.25 if ap else 1.0)),
        bone=float(rng.uniform(0.8, 1.25)), gamma=float(rng.uniform(0.8, 1.25)),
        sharpen=float(rng.uniform(0.2, 1.0)),
        collimation=coll,  # type: ignore[arg-type]
        shutter_black=bool(rng.random() < 0.3),
        marker=None if rng.random() < 0.3 else ("L" if rng.random() < 0.8 else "R"),
        modality=base.get("modality", "CR" if rng.random() < 0.5 else "DX"),
        photometric=base.get("photometric", "MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2"),
        bits=int(base.get("bits", rng.choice((12, 12, 14, 15, 16)))),
        compression=[None, "rle", "j2k"][int(rng.choice(3, p=(0.81, 0.15, 0.04)))],
        window=bool(rng.random() < 0.6), date=date, framing=_framing(rng, ap),
        drc=float(rng.uniform(0.35, 0.9)), lift=float(rng.uniform(0.15, 0.9)),
        equalize=float(rng.uniform(0, 0.4) * (rng.random() < 0.5)), blur=float(rng.exponential(0.6)),
    )


def _framing(rng: np.random.Generator, ap: bool) -> tuple[float, float, float]:
    """Where the lungs sit on the film, drawn from real films; AP portables frame a little wider."""
    y0, height, x0 = shapemodel.framing(rng)
    if ap:
        height *= rng.uniform(0.85, 1.0)
    return y0, height, x0


def site_habits(rng: np.random.Generator) -> dict:
    """Detector habits shared by a patient's studies (same hospital, same machines)."""
    modality = "CR" if rng.random() < 0.5 else "DX"
    return {
        "modality": modality,
        "photometric": "MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2",
        "bits": int(rng.choice((12, 12, 14, 15, 16))),
    }
