"""Support devices on phantom films: where they go, how often, and that they move no box."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from regionmir.phantom import body, devices, patient, render

TRACHEA = np.stack([np.full(20, -0.005), np.linspace(-0.9, 0.2, 20)], 1)
CARINA, HEART_TOP = (-0.005, 0.2), 0.3
GASTRIC = np.array([[0.2, 1.1], [0.35, 1.1], [0.35, 1.25], [0.2, 1.25]])


def _sample(view: str, seed: int) -> devices.Devices:
    return devices.sample(view, TRACHEA, CARINA, HEART_TOP, GASTRIC, 0.5, np.random.default_rng(seed))


def test_portables_carry_devices_and_pa_films_seldom_do():
    ap = [_sample("AP", s).kinds for s in range(300)]
    pa = [_sample("PA", s).kinds for s in range(300)]
    assert np.mean([bool(k) for k in ap]) > 0.6
    assert np.mean([bool(k) for k in pa]) < 0.15
    assert not any("ett" in k or "enteric" in k for k in pa)  # intubated patients are not filmed PA
    assert {"ecg", "ett", "enteric", "central"} <= {x for k in ap for x in k}


def test_tubes_and_lines_end_where_bedside_practice_puts_them():
    seen = set()
    for s in range(200):
        d = _sample("AP", s)
        kinds = iter(d.kinds)
        paths = iter(d.paths)
        for kind in kinds:
            if kind == "ett":
                tube, stripe = next(paths), next(paths)
                tip = tube[0][-1]
                assert 0.12 <= CARINA[1] - tip[1] <= 0.28  # 3-7 cm above the carina
                assert np.abs(tube[0][:, 0] - CARINA[0]).max() < 0.05  # down the trachea
                assert stripe[2] > tube[2]  # the radiopaque stripe is the dense part
            elif kind == "enteric":
                tube, _ = next(paths), next(paths)
                tip = tube[0][-1]
                assert np.abs(tip - GASTRIC.mean(0)).max() < 0.15  # ends in the gastric bubble
                assert tube[0][:, 1].max() > 1.0  # through the diaphragm
            elif kind == "central":
                line = next(paths)
                tip = line[0][-1]
                assert abs(tip[0] - (-0.07)) < 0.05 and -0.1 <= tip[1] - HEART_TOP <= 0.06  # SVC, near the atrium
            else:  # ecg: one lead per electrode, running away from it
                leads = [next(paths) for _ in range(len(d.discs) // 2)]
                assert all(np.linalg.norm(p[-1] - p[0]) > 0.25 for p, _, _ in leads)
            seen.add(kind)
    assert seen == {"ecg", "ett", "enteric", "central"}


def test_devices_brighten_the_film_and_move_no_box(monkeypatch):
    rng = np.random.default_rng(21)
    p = patient.sample_patient(rng, 0, "10000003")
    pose = dataclasses.replace(patient.sample_pose(rng, 256, dt.date(2150, 1, 1)), view="AP",
                               collimation=(0, 0, 0, 0), marker=None, shutter_black=False)

    def film(prob: float):
        monkeypatch.setitem(devices.P_DEVICE, "AP", {"ecg": prob, "ett": prob, "enteric": prob, "central": prob})
        return render.render(p, pose, [], np.random.default_rng(5))

    bare, fitted = film(0.0), film(1.0)
    assert bare.devices == [] and fitted.devices == ["ett", "enteric", "central", "ecg"]
    assert bare.boxes == fitted.boxes  # devices lie on the patient, not in the anatomy
    diff = fitted.image - bare.image
    assert diff.max() > 0.1 and (diff > 0.05).mean() < 0.2  # thin bright lines, not a new film
    # the tube in the trachea, between the film's top and the carina
    f = render.Frame(p, pose, *bare.image.shape)
    cx, cy = f.point(body.Thorax(p, pose).carina)
    column = diff[: int(cy) - 3, max(0, int(cx) - 6): int(cx) + 7]
    assert (column.max(axis=1) > 0.05).mean() > 0.5


@pytest.mark.parametrize("view", ["AP", "PA"])
def test_same_seed_same_devices(view):
    a, b = _sample(view, 3), _sample(view, 3)
    assert a.kinds == b.kinds and all(np.array_equal(x[0], y[0]) for x, y in zip(a.paths, b.paths))
