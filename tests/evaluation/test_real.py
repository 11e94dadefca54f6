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


# --- the heart: Wingspan source, CTR, heart retrieval --------------------------------------------


def _wingspan_masks(h=100, w=120, heart=(40, 100)):
    """Right lung x 10-50 (image left), left lung x 70-110, heart x heart[0]-heart[1], as 0/255 masks."""
    right, left, hm = (np.zeros((h, w), np.uint8) for _ in range(3))
    right[10:90, 10:50] = 255
    left[20:80, 70:110] = 255
    hm[50:85, heart[0]:heart[1]] = 255
    return {"right_lung": right, "left_lung": left, "heart": hm}


def _wingspan_source(tmp_path, n=4):
    from helpers.real_films import write_wingspan_source

    films = []
    for i in range(n):
        masks = _wingspan_masks(heart=(40, 100) if i % 2 == 0 else (50, 80))  # CTR 0.6 or 0.3
        masks["heart"][50:85, 30:40] = 100  # a soft edge below the threshold: not heart
        masks["right_lung"][0, 0] = 255  # a one-pixel speck: ignored
        img = np.full((100, 120), 90, np.uint8)
        img[masks["right_lung"] > 127] = img[masks["left_lung"] > 127] = 30
        img[masks["heart"] > 127] = 200
        films.append((f"w{i}", img, masks, (0.6 if i % 2 == 0 else 0.3) if i < n - 1 else None))
    src = write_wingspan_source(tmp_path, films)
    (src / "jsrt" / "png").mkdir(parents=True)  # never read
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "jsrt" / "png" / "JPCLN001.png")
    return src


def test_cardiothoracic_ratio_is_heart_width_over_widest_lungs():
    from regionmir.evaluation.real import cardiothoracic_ratio

    boxes = {"right-lung": Box(10, 10, 50, 90), "left-lung": Box(70, 20, 110, 80), "cardiac-silhouette": Box(40, 50, 100, 85)}
    assert cardiothoracic_ratio(boxes) == pytest.approx(60 / 100)  # heart 40-100 over lungs 10-110
    swapped = {**boxes, "right-lung": boxes["left-lung"], "left-lung": boxes["right-lung"]}
    assert cardiothoracic_ratio(swapped) == pytest.approx(0.6)  # outer edges, whichever side
    assert cardiothoracic_ratio({k: v for k, v in boxes.items() if k != "cardiac-silhouette"}) is None


def test_ctr_errors_against_a_hand_count():
    from regionmir.evaluation.real import ctr_errors

    out = ctr_errors([0.55, 0.45, None, 0.6], [0.5, 0.5, 0.4, None], [0.52, None, 0.41, 0.7])
    assert out["n_predicted_vs_masks"] == 2 and out["mae_predicted_vs_masks"] == pytest.approx(0.05)
    assert out["n_predicted_vs_given"] == 2 and out["mae_predicted_vs_given"] == pytest.approx((0.03 + 0.1) / 2)
    assert out["mae_masks_vs_given"] == pytest.approx((0.02 + 0.01) / 2)
    assert out["agreement_enlarged"] == pytest.approx(0.5)  # 0.55 vs 0.5 disagree, 0.45 vs 0.5 agree


def test_prep_reads_wingspan_masks_into_boxes_and_never_jsrt(tmp_path):
    from regionmir.evaluation.real.prep import WINGSPAN, prepare

    n = prepare(None, None, tmp_path / "out", wingspan=_wingspan_source(tmp_path / "src"))
    assert n == 4
    films = read_films(tmp_path / "out")
    assert not any("JPCLN" in str(f.path) or "jsrt" in str(f.path) for f in films)
    f0 = next(f for f in films if f.path.stem == "w0")
    assert f0.boxes == {"right-lung": Box(10, 10, 50, 90), "left-lung": Box(70, 20, 110, 80),
                        "cardiac-silhouette": Box(40, 50, 100, 85)}  # soft edge (100) and speck left out
    assert f0.source == WINGSPAN and f0.license == "MIT" and f0.ctr == pytest.approx(0.6) and f0.finding == ""
    assert next(f for f in films if f.path.stem == "w3").ctr is None  # not in ctr_ground_truth.csv
    assert f0.group == group_of("wingspan:w0") and len({f.group for f in films}) == 4
    assert truth_boxes(f0, (100, 120))["cardiac-silhouette"] == Box(40, 50, 100, 85)
    assert f0.path.is_file()


def test_old_films_csv_without_heart_or_source_still_reads(tmp_path):
    f = read_films(_folder(tmp_path))[1]
    assert f.source == "real" and f.ctr is None and "cardiac-silhouette" not in f.boxes


def test_same_label_share_matches_a_hand_count_and_the_all_label_metric():
    from regionmir.evaluation import metrics
    from regionmir.evaluation.real import same_label_share

    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.2, 0.8]], np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels, groups = ["h", "h", "l", "l"], ["a", "b", "c", "d"]
    assert same_label_share(emb, labels, groups, "h", k=1) == 1.0
    assert same_label_share(emb, labels, groups, "h", k=2) == pytest.approx(0.5)  # h's 2 nearest: the other h, an l
    assert same_label_share(emb, labels, ["a", "a", "c", "d"], "h", k=1) == 0.0  # own patient's heart is no neighbour
    rng = np.random.default_rng(3)
    e = rng.normal(size=(40, 5))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    lab = [("h", "r", "l")[i] for i in rng.integers(0, 3, 40)]
    grp = [f"p{i}" for i in rng.integers(0, 15, 40)]
    weighted = sum(lab.count(x) * same_label_share(e, lab, grp, x, k=4) for x in set(lab)) / len(lab)
    assert weighted == pytest.approx(metrics.same_label_at_k(e, lab, 4, groups=grp), abs=1e-9)


def _reference_filtered(emb, labels, groups, k, queries, candidates):
    """The slow reference with a query subset and a candidate filter: drop the others, then rank."""
    rows = []
    for i in range(len(labels)):
        if not queries[i]:
            continue
        pool = [j for j in range(len(labels)) if groups[j] != groups[i] and candidates[j]]
        if not pool:
            continue
        ranked = sorted(pool, key=lambda j: (-float(emb[i] @ emb[j]), j))
        rel = [labels[j] == labels[i] for j in ranked]
        hits = [sum(rel[:r]) / r for r in range(1, k + 1) if r <= len(rel) and rel[r - 1]]
        rows.append((sum(rel[:k]) / k, sum(hits) / min(k, sum(rel)) if sum(rel) else 0.0, sum(rel) / len(pool)))
    return np.mean(rows, axis=0), len(rows)


def test_findings_retrieval_with_queries_and_a_filter_matches_a_slow_reference():
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(30, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    groups = [f"p{i}" for i in rng.integers(0, 10, 30)]
    labels = [("enlarged", "normal")[i] for i in rng.integers(0, 2, 30)]
    queries, candidates = rng.random(30) < 0.5, rng.random(30) < 0.6
    got = findings_retrieval(emb, labels, groups, k=3, queries=queries, candidates=candidates)
    (p, ap, chance), n = _reference_filtered(emb, labels, groups, 3, queries, candidates)
    assert got["queries"] == n > 0
    assert (got["precision@3"], got["map@3"], got["chance_precision"]) == pytest.approx((p, ap, chance), abs=1e-9)


def test_enlarged_heart_retrieval_against_a_hand_count():
    from regionmir.evaluation.real import enlarged_retrieval

    # a, b enlarged; c, d normal; e unknown. a's nearest other is c (normal), then b.
    deg = np.radians([0, -15, 10, 90, 1])  # a, b, c, d, e on the unit circle
    emb = np.stack([np.cos(deg), np.sin(deg)], axis=1)
    true = [0.6, 0.55, 0.45, 0.4, float("nan")]
    pred = [0.58, 0.52, 0.49, 0.52, 0.7]  # c predicted normal: the filter drops it; d predicted enlarged
    out = enlarged_retrieval(emb, true, pred, ["a", "b", "c", "d", "e"], k=1)
    assert out["enlarged"] == 2 and out["heart_crops"] == 4
    assert out["embedding"]["queries"] == 2
    assert out["embedding"]["precision@1"] == pytest.approx(0.5)  # a finds c (miss); b finds a (hit)
    assert out["embedding"]["chance_precision"] == pytest.approx(1 / 3)  # 1 enlarged among 3 known others
    assert out["ctr_filter"]["precision@1"] == 1.0  # a's pool {b, d}: b nearest; b's pool {a, d}: a
    assert out["ctr_filter"]["chance_precision"] == pytest.approx(0.5)
    assert out["ctr_filter"]["pool_share"] == pytest.approx(3 / 4)  # a, b, d of the 4 known


def test_localizer_and_ctr_parts_report_the_heart_per_source(tmp_path):
    from regionmir.evaluation.real.check import _ctr_part, _localizer_part
    from regionmir.evaluation.real.films import RealFilm

    truth = {"right-lung": Box(10, 10, 50, 90), "left-lung": Box(70, 20, 110, 80), "cardiac-silhouette": Box(40, 50, 100, 85)}
    pred = {**truth, "cardiac-silhouette": Box(40, 50, 90, 85)}  # heart IoU 50/60, CTR 0.5 instead of 0.6

    def res(source, t, p, ctr=None):
        film = RealFilm(tmp_path / "f.png", None, {}, "PA", "", source + str(len(t)), "test", "", source, ctr)
        return FilmResult(film, None, t, p, lung_iou(t, p))

    lungs = {k: v for k, v in truth.items() if k != "cardiac-silhouette"}
    results = [res("wingspan", truth, pred, 0.61), res("covid", lungs, pred)]
    loc = _localizer_part(results)
    assert loc["by_source"]["wingspan"]["iou_heart"] == pytest.approx(50 / 60) and loc["all"]["n_heart"] == 1
    assert np.isnan(loc["by_source"]["covid"]["iou_heart"]) and loc["by_source"]["covid"]["iou_mean"] == 1.0
    ctr = _ctr_part(results)
    assert ctr["n_predicted_vs_masks"] == 1 and ctr["mae_predicted_vs_masks"] == pytest.approx(0.1)
    assert ctr["by_source"]["wingspan"]["mae_predicted_vs_given"] == pytest.approx(0.11)
    assert ctr["by_source"]["covid"]["n_predicted_vs_masks"] == 0


def test_sheet_draws_the_heart_in_magenta(tmp_path):
    img = np.zeros((100, 120), np.float32)
    r = FilmResult(None, img, {}, {"cardiac-silhouette": Box(40, 50, 100, 85)}, {"cardiac-silhouette": 0.8})
    rgb = np.asarray(Image.open(write_sheet([r], tmp_path / "s.png", columns=1, side=64)))
    magenta = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] > 200)
    assert magenta.any()


def test_cli_reports_heart_and_ctr_on_a_wingspan_folder(tmp_path, trained_model_dir):
    from regionmir.evaluation.real.prep import prepare

    folder = tmp_path / "real"
    prepare(None, None, folder, test_share=1.0, wingspan=_wingspan_source(tmp_path / "src"))
    done = subprocess.run([sys.executable, "-m", "regionmir", "evaluate-real", str(folder), "--model",
                           str(trained_model_dir), "--out", str(tmp_path / "rep"), "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sources"] == {"wingspan": 4}
    assert report["localizer"]["by_source"]["wingspan"]["n_heart"] == 4
    assert report["encoder"]["crops_truth"] == 12  # 4 films x (2 lungs + heart)
    assert 0.0 <= report["encoder"]["accuracy_cardiac-silhouette"] <= 1.0
    assert report["encoder"]["enlarged_heart"]["enlarged"] == 2  # w0, w2 (CTR 0.6); w3 by its masks: 0.3
    assert report["ctr"]["n_predicted_vs_masks"] == 4 and report["ctr"]["n_predicted_vs_given"] == 3
    assert report["ctr"]["mae_masks_vs_given"] == pytest.approx(0.0, abs=1e-3)


def test_sheet_picks_films_of_every_source_in_turn(tmp_path):
    from regionmir.evaluation.real.check import sheet_picks
    from regionmir.evaluation.real.films import RealFilm

    films = [RealFilm(tmp_path / f"{i}.png", None, {}, "PA", "", str(i), "test", "", src)
             for i, src in enumerate(["covid"] * 5 + ["wingspan"] * 2)]
    assert sheet_picks(films, 4) == {0, 1, 5, 6}
    assert sheet_picks(films, 7) == set(range(7)) and sheet_picks(films, 0) == set()
