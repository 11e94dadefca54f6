"""Randomized detector processing of the phantoms: each knob changes the film the way it says."""

from __future__ import annotations

import dataclasses
import datetime as dt
from unittest import mock

import numpy as np

from regionmir.anatomy import Anatomy
from regionmir.phantom import devices, patient, render

NO_DEVICES = {"ecg": 0.0, "ett": 0.0, "enteric": 0.0, "central": 0.0}


def _film(**changes):
    rng = np.random.default_rng(11)
    p = patient.sample_patient(rng, 0, "10000001")
    fixed = {"view": "PA", "collimation": (0, 0, 0, 0), "marker": None, "shutter_black": False,
             "photons": 5000.0, "blur": 0.0, "equalize": 0.0}
    pose = dataclasses.replace(patient.sample_pose(rng, 256, dt.date(2150, 1, 1)), **{**fixed, **changes})
    with mock.patch.dict(devices.P_DEVICE, {"PA": NO_DEVICES}):  # the detector alone changes the film
        out = render.render(p, pose, [], np.random.default_rng(5))
    lung = out.boxes[Anatomy.RIGHT_MID_LUNG_ZONE]
    return out.image, out.image[int(lung.y1):int(lung.y2), int(lung.x1):int(lung.x2)].mean()


def test_window_lift_makes_grey_lungs():
    _, dark = _film(lift=0.15)
    _, grey = _film(lift=0.9)
    assert grey > dark + 0.05


def test_dynamic_range_compression_narrows_the_body_range():
    low, _ = _film(drc=0.35)
    high, _ = _film(drc=0.9)
    assert np.percentile(high, 95) - np.percentile(high, 5) < np.percentile(low, 95) - np.percentile(low, 5)


def test_blur_and_equalization_change_the_film_without_moving_it():
    sharp, _ = _film()
    soft, _ = _film(blur=1.5)
    eq, _ = _film(equalize=0.4)
    assert np.abs(np.diff(soft, axis=1)).mean() < 0.7 * np.abs(np.diff(sharp, axis=1)).mean()
    assert not np.allclose(eq, sharp) and eq.shape == sharp.shape
