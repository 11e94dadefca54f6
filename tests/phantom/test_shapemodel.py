"""The phantom's shape model: real-anatomy proportions, laterality, sampling, placement."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from regionmir.phantom import body, patient, shapemodel


def _sample(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return [shapemodel.shapes(shapemodel.sample_scores(rng)) for _ in range(n)]


def test_model_is_small_and_says_where_it_came_from():
    m = shapemodel.load()
    assert shapemodel.MODEL_FILE.stat().st_size < 32_000
    assert "no JSRT" in str(m["provenance"]) and int(m["n_lung_examples"]) > 500
    assert m["lung_modes"].shape == (len(m["lung_sd"]), 2 * (44 + 50))


def test_mean_shape_is_two_lungs_in_lung_units_with_the_right_lung_on_the_patients_right():
    sh = shapemodel.shapes(np.zeros(len(shapemodel.load()["lung_sd"]) + len(shapemodel.load()["heart_sd"])))
    assert sh.right_lung.shape == (44, 2) and sh.left_lung.shape == (50, 2) and sh.heart.shape == (26, 2)
    assert sh.right_lung[:, 0].max() < 0 < sh.left_lung[:, 0].min()  # x > 0 is the patient's left
    top = min(sh.right_lung[:, 1].min(), sh.left_lung[:, 1].min())
    assert top == pytest.approx(0, abs=0.02)
    assert max(sh.right_lung[:, 1].max(), sh.left_lung[:, 1].max()) == pytest.approx(1, abs=0.02)


def test_samples_vary_but_keep_real_proportions():
    shapes = _sample()
    widths = np.array([s.left_lung[:, 0].max() - s.right_lung[:, 0].min() for s in shapes])
    centre = np.array([(s.heart[:, 0].max() + s.heart[:, 0].min()) / 2 for s in shapes])
    ctr = np.array([np.ptp(s.heart[:, 0]) for s in shapes]) / widths
    assert widths.std() > 0.03  # not one shape
    assert 0.95 < np.median(widths) < 1.25  # both lungs about as wide as they are tall
    assert np.mean(centre > 0) > 0.9  # the heart sits to the patient's left
    assert 0.40 < np.median(ctr) < 0.52
    same = shapemodel.shapes(shapemodel.sample_scores(np.random.default_rng(1)))
    again = shapemodel.shapes(shapemodel.sample_scores(np.random.default_rng(1)))
    assert np.array_equal(same.heart, again.heart)


def test_scores_are_clipped():
    rng = np.random.default_rng(0)
    scores = np.array([shapemodel.sample_scores(rng) for _ in range(500)])
    assert np.abs(scores).max() <= shapemodel.CLIP_SD


def test_envelopes_follow_the_outline():
    square = np.array([[0.1, 0.0], [0.5, 0.0], [0.5, 1.0], [0.1, 1.0]])
    assert shapemodel.lower_envelope(square, np.array([0.3]))[0] == pytest.approx(1.0)
    assert shapemodel.lateral_envelope(square, np.array([0.5]))[0] == pytest.approx(0.5)
    tab = shapemodel.Tables(shapemodel.Shapes(square * [-1, 1], square, square))
    assert tab.medial(np.array([0.5]), 1)[0] == pytest.approx(0.1)
    assert tab.lateral(np.array([0.5]))[0] == pytest.approx(0.5)


def test_phantom_patients_use_the_model_and_place_clavicles_across_the_apices():
    rng = np.random.default_rng(3)
    p = patient.sample_patient(rng, 0, "10000001")
    pose = patient.sample_pose(rng, 256, dt.date(2150, 1, 1))
    assert len(p.shape) == len(shapemodel.load()["lung_sd"]) + len(shapemodel.load()["heart_sd"])
    b = body.build(p, pose)
    sh = shapemodel.shapes(p.shape)
    assert np.allclose(b.polys["right_lung"], sh.right_lung)
    heart = b.polys["heart"]
    assert np.ptp(heart[:, 0]) == pytest.approx(p.ctr * 2 * p.width * (1.12 if pose.view == "AP" else 1.0)
                                                / np.sqrt(pose.insp), rel=0.05)
    clav = body.clavicle(p.width, p.rib_gap, ap=False)
    assert clav[0, 1] > 0.05  # the head lies below the lung apex (y = 0), about one interspace
    assert clav[-1, 1] < clav[0, 1]  # and the clavicle rises toward the shoulder
    assert body.clavicle(p.width, p.rib_gap, ap=True)[0, 1] < clav[0, 1]  # AP projects it higher


def test_framing_puts_the_lungs_where_real_films_have_them():
    rng = np.random.default_rng(0)
    f = np.array([shapemodel.framing(rng) for _ in range(300)])
    assert 0.10 < np.median(f[:, 0]) < 0.18  # apex
    assert 0.78 < np.median(f[:, 0] + f[:, 1]) < 0.84  # bases
    assert 0.47 < np.median(f[:, 2]) < 0.53


def test_costophrenic_angle_is_the_low_lateral_corner_and_enlarged_hearts_grow():
    sh = shapemodel.shapes(np.zeros(len(shapemodel.load()["lung_sd"]) + len(shapemodel.load()["heart_sd"])))
    x, y = shapemodel.cp_angle(sh.right_lung, -1)
    assert x < -0.4 and y > 0.9  # patient's right (x < 0), at the base
    normal, big = shapemodel.scaled_heart(sh, 0.45, 1.0), shapemodel.scaled_heart(sh, 0.6, 1.0)
    assert np.ptp(big.heart[:, 0]) == pytest.approx(np.ptp(normal.heart[:, 0]) * 0.6 / 0.45)
    assert big.heart[:, 1].max() == pytest.approx(normal.heart[:, 1].max())  # grows up and out, not down
