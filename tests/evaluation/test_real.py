"""The real-film check: truth from masks (laterality!), IoU, retrieval metrics, films.csv, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers.real_films import write_film_folder
from PIL import Image

from regionmir.errors import AnnotationError
from regionmir.evaluation.real import findings_retrieval, lung_boxes_from_mask, lung_iou, read_films, truth_boxes, write_sheet
from regionmir.evaluation.real.check import FilmResult
from regionmir.evaluation.real.prep import group_of, split_of
from regionmir.regions import Box


@pytest.fixture(scope="module")
def trained_model_dir(tiny_model, tiny_localizer, tmp_path_factory):
    """The tiny encoder and the tiny localizer in one model folder."""
    import shutil

    out = tmp_path_factory.mktemp("both")
    shutil.copy(tiny_model / "encoder.onnx", out / "encoder.onnx")
    shutil.copy(tiny_localizer / "localizer.onnx", out / "localizer.onnx")
    return out


def _two_lungs(h=100, w=120, touching=False) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[10:90, 10:50] = True  # image left: the patient's RIGHT lung
    m[20:80, 70:110] = True
    if touching:
        m[40:42, 50:70] = True  # a bridge: one blob
    return m


def test_mask_blobs_become_right_and_left_lung_by_image_side():
    boxes = lung_boxes_from_mask(_two_lungs())
    assert boxes["right-lung"] == Box(10, 10, 50, 90)
    assert boxes["left-lung"] == Box(70, 20, 110, 80)


def test_touching_lungs_are_cut_at_the_gap_and_specks_ignored():
    m = _two_lungs(touching=True)
    m[0, 0] = m[99, 119] = True  # one-pixel specks
    boxes = lung_boxes_from_mask(m)
    assert boxes["right-lung"].x1 == 10 and boxes["right-lung"].x2 <= 60
    assert boxes["left-lung"].x1 >= 50 and boxes["left-lung"].x2 == 110
    assert lung_boxes_from_mask(np.zeros((5, 5), bool)) is None


def test_lung_iou_matches_by_name_not_order():
    t = {"right-lung": Box(0, 0, 10, 10), "left-lung": Box(20, 0, 30, 10)}
    swapped = {"right-lung": Box(20, 0, 30, 10), "left-lung": Box(0, 0, 10, 10)}
    assert lung_iou(t, t) == {"right-lung": 1.0, "left-lung": 1.0}
    assert lung_iou(t, swapped) == {"right-lung": 0.0, "left-lung": 0.0}
    assert lung_iou(t, {"right-lung": Box(0, 0, 10, 20)})["right-lung"] == pytest.approx(0.5)


def test_findings_retrieval_against_a_hand_count():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out = findings_retrieval(emb, ["covid", "covid", "none", "none"], ["a", "b", "c", "d"], k=1)
    assert out["precision@1"] == 1.0 and out["hit_rate@1"] == 1.0 and out["map@1"] == 1.0
    assert out["chance_precision"] == pytest.approx(1 / 3) and out["queries"] == 4
    bad = findings_retrieval(emb, ["covid", "none", "covid", "none"], ["a", "b", "c", "d"], k=1)
    assert bad["precision@1"] == 0.0


def _folder(tmp_path):
    img = np.full((100, 120), 90, np.uint8)
    img[_two_lungs()] = 30
    return write_film_folder(tmp_path, [
        (f"f{i}", img, _two_lungs() if i else None,
         {"right_lung": "1 2 3 4" if i == 0 else "", "left_lung": "", "view": "PA",
          "finding": "covid" if i < 2 else "none", "group": f"g{i}", "split": "test", "license": ""})
        for i in range(3)
    ])


def test_films_csv_truth_from_mask_else_boxes(tmp_path):
    films = read_films(_folder(tmp_path), "test")
    assert len(films) == 3 and read_films(tmp_path, "train") == []
    assert truth_boxes(films[0], (100, 120)) == {"right-lung": Box(1, 2, 3, 4)}
    assert truth_boxes(films[1], (100, 120))["left-lung"] == Box(70, 20, 110, 80)
    with pytest.raises(AnnotationError, match="films.csv"):
        read_films(tmp_path / "images")


def test_split_by_patient_is_stable_and_mixed():
    groups = [group_of(str(i)) for i in range(200)]
    assert group_of("7") == group_of("7") and group_of("7") != group_of("8")
    share = np.mean([split_of(g) == "test" for g in groups])
    assert 0.35 < share < 0.65


def test_sheet_draws_truth_and_prediction(tmp_path):
    img = np.zeros((100, 120), np.float32)
    r = FilmResult(None, img, {"right-lung": Box(10, 10, 50, 90)}, {"right-lung": Box(12, 10, 50, 90)}, {"right-lung": 0.95})
    path = write_sheet([r], tmp_path / "s.png", columns=2, side=64)
    rgb = np.asarray(Image.open(path))
    assert rgb.shape == (64, 128, 3)
    assert (rgb[..., 1] > 200).any() and (rgb[..., 0] > 200).any()  # green truth, orange prediction


def test_cli_scores_a_trained_model_on_real_films(tmp_path, trained_model_dir):
    folder = _folder(tmp_path / "real")
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "regionmir", "evaluate-real", str(folder), "--model",
                           str(trained_model_dir), "--out", str(out), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["films"] == 3 and report["films_with_truth"] == 3
    assert report["encoder"]["crops_truth"] == 5  # film 0 has a right-lung box only
    assert 0.0 <= report["encoder"]["accuracy"] <= 1.0
    assert (out / "real_check.json").is_file() and (out / "real_check.png").is_file()


def test_cli_says_what_to_do_without_films_csv(tmp_path):
    done = subprocess.run([sys.executable, "-m", "regionmir", "evaluate-real", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "films.csv" in done.stderr


def test_findings_pool_leaves_out_every_crop_of_the_query_patient():
    """Patient a's two covid crops are near twins: neither may find the other (a's own film is no finding)."""
    emb = np.array([[1, 0], [0.99, 0.14], [0.8, 0.6], [0, 1]], np.float32)  # a, a, c, b
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out = findings_retrieval(emb, ["covid", "covid", "none", "covid"], ["a", "a", "c", "b"], k=1)
    # a's pool is {c, b}: c ranks first and is not covid; b's pool {a, a, c}: c is nearest too
    assert out["precision@1"] == 0.0 and out["hit_rate@1"] == 0.0 and out["queries"] == 4
    assert out["chance_precision"] == pytest.approx((1 / 2 + 1 / 2 + 0 + 2 / 3) / 4)  # relevant / pool size
    one_patient = findings_retrieval(emb, ["covid"] * 4, ["a"] * 4, k=1)
    assert one_patient["queries"] == 0 and np.isnan(one_patient["precision@1"])  # no other patient: no query


def _reference_findings(emb, findings, groups, k):
    """A slow, obvious findings retrieval: per query, rank the other patients' crops by cosine."""
    from math import comb

    rows = []
    for i in range(len(findings)):
        pool = [j for j in range(len(findings)) if groups[j] != groups[i]]
        if not pool:
            continue
        ranked = sorted(pool, key=lambda j: (-float(emb[i] @ emb[j]), j))
        rel = [findings[j] == findings[i] for j in ranked]
        n_rel = sum(rel)
        hits = [sum(rel[:r]) / r for r in range(1, k + 1) if r <= len(rel) and rel[r - 1]]
        draw = min(k, len(pool))
        rows.append((sum(rel[:k]) / k, sum(hits) / min(k, n_rel) if n_rel else 0.0, float(any(rel[:k])),
                     n_rel / len(pool), 1 - comb(len(pool) - n_rel, draw) / comb(len(pool), draw)))
    return dict(zip([f"precision@{k}", f"map@{k}", f"hit_rate@{k}", "chance_precision", f"chance_hit_rate@{k}"],
                    np.mean(rows, axis=0)), queries=len(rows))


def test_findings_retrieval_matches_a_slow_reference_with_several_crops_per_patient():
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(30, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    groups = [f"p{i}" for i in rng.integers(0, 8, 30)]  # about four crops a patient
    findings = [("covid", "none", "pneumonia")[i] for i in rng.integers(0, 3, 30)]
    got = findings_retrieval(emb, findings, groups, k=3)
    want = _reference_findings(emb, findings, groups, k=3)
    assert got.keys() == want.keys() and got["queries"] == want["queries"] == 30
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


class _PixelEncoder:
    """An encoder stand-in: a crop's embedding is its first two pixels, its anatomy always right lung."""

    def embed(self, crops):
        emb = crops.reshape(len(crops), -1)[:, :2].astype(np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True), np.zeros((len(crops), 1))

    def predict_anatomy(self, logits):
        from regionmir.anatomy import Anatomy

        return [Anatomy.RIGHT_LUNG] * len(logits)


def test_check_pools_findings_by_patient_not_by_film(tmp_path):
    """Two films of one patient are one patient: the check must not let one find the other."""
    from regionmir.evaluation.real.check import _encoder_part
    from regionmir.evaluation.real.films import RealFilm

    def result(name, group, finding, vec):
        film = RealFilm(tmp_path / f"{name}.png", None, {}, "PA", finding, group, "test")
        crop = np.tile(np.asarray(vec, np.float32), 8).reshape(4, 4)
        return FilmResult(film, None, {}, {}, crops={"right-lung": (crop, "truth")})

    results = [result("p1", "p", "covid", [1, 0]), result("p2", "p", "covid", [1, 0.01]),
               result("r", "r", "none", [0.9, 0.3]), result("q", "q", "covid", [0, 1])]
    out = _encoder_part(results, _PixelEncoder(), k=1)["findings"]["right-lung"]
    assert out["queries"] == 4
    assert out["precision@1"] == 0.0  # each p film's nearest other patient is r (none); q's too
