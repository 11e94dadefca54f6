"""Evaluation runner: store-based metrics against a numpy brute-force reference, and end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from regionmir.anatomy import ALL
from regionmir.evaluation import metrics as m
from regionmir.evaluation.run import Encoded, EvalConfig, _eval_store, fill_collection, run_queries
from regionmir.evaluation.summary import summarize
from regionmir.store import PointRecord, point_id

ANATS = ALL[:4]
KS = (1, 3, 10)


def _points(rng, split: str, patients: int, studies: int, noise: float) -> list[PointRecord]:
    """Region points whose vectors mix anatomy, finding and patient directions with noise."""
    out = []
    for p in range(patients):
        for s in range(studies):
            for a in ANATS:
                finds = ("opacity",) if rng.random() < 0.3 else ()
                v = np.zeros(16)
                v[a.index], v[8 + len(finds)], v[12 + p % 4] = 1.0, 0.5, 0.3
                v += noise * rng.normal(size=16)
                study = f"{split}{p}.{s}"
                out.append(PointRecord(point_id(study, a.slug, "m"), v.astype(np.float32), {
                    "anatomy": a.slug, "findings": list(finds), "patient": f"pt-{split}{p}",
                    "study_id": study, "image_id": study}))
    return out


class _Enc:  # what fill_collection needs of an Encoder
    dim, model_id = 16, "m"


def _run(tmp_path: Path, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    ref, qry = _points(rng, "tr", 12, 2, noise), _points(rng, "te", 5, 2, noise)
    logits = rng.normal(size=(len(qry), len(ANATS)))
    cfg = EvalConfig(Path("."), Path("."), Path("."), ks=KS, curve_depth=20)
    store = _eval_store(tmp_path / "store")  # HNSW forced, as in `regionmir evaluate`
    try:
        fill_collection(store, "train", _Enc, ref)
        fill_collection(store, "test", _Enc, qry)
        rows = run_queries(store, "train", "test", Encoded(qry, [logits]), ref, qry, ANATS, cfg)
    finally:
        store.close()
    return ref, qry, logits, rows, summarize(rows, KS, cfg.depth)


def _brute(query: PointRecord, pool: list[PointRecord], keep) -> list[PointRecord]:
    """Exact cosine ranking in numpy (ties by id), restricted to points where ``keep`` holds."""
    pool = [p for p in pool if keep(p)]
    vecs = np.stack([p.vector / np.linalg.norm(p.vector) for p in pool]).astype(np.float64)
    sims = vecs @ (query.vector / np.linalg.norm(query.vector))
    return [pool[i] for i in m.rank_order(sims, [p.id for p in pool])]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """One synthetic run shared by the tests that only read it."""
    return _run(tmp_path_factory.mktemp("noisy"), noise=0.8)


def test_store_metrics_match_numpy_reference(noisy):
    ref, qry, logits, rows, summary = noisy
    same_anat, prec_abn, ap_abn, hr_pt, acc = {k: [] for k in KS}, {k: [] for k in KS}, {k: [] for k in KS}, [], []
    for q, qp in enumerate(qry):
        anat, finds = qp.payload["anatomy"], qp.payload["findings"]
        acc.append(ANATS[int(np.argmax(logits[q]))].slug == anat)
        plain = _brute(qp, ref, lambda p: True)
        filtered = _brute(qp, ref, lambda p: p.payload["anatomy"] == anat)
        rel = [p.payload["findings"] == finds for p in filtered]
        n_rel = sum(p.payload["anatomy"] == anat and p.payload["findings"] == finds for p in ref)
        mates = _brute(qp, qry, lambda p: p.payload["anatomy"] == anat and p.payload["study_id"] != qp.payload["study_id"])
        for k in KS:
            same_anat[k].append(np.mean([p.payload["anatomy"] == anat for p in plain[:k]]))
            if finds and n_rel:
                prec_abn[k].append(m.precision_at_k(rel, k))
                ap_abn[k].append(m.average_precision_at_k(rel, k, n_rel))
        hr_pt.append(any(p.payload["patient"] == qp.payload["patient"] for p in mates[:10]))
    assert summary["anatomy"]["accuracy"] == pytest.approx(np.mean(acc))
    for k in KS:
        assert summary["anatomy"][f"same_anatomy@{k}"] == pytest.approx(np.mean(same_anat[k]))
        assert summary["findings_abnormal"][f"precision@{k}"] == pytest.approx(np.mean(prec_abn[k]))
        assert summary["findings_abnormal"][f"map@{k}"] == pytest.approx(np.mean(ap_abn[k]))
    assert summary["same_patient"]["hit_rate@10"] == pytest.approx(np.mean(hr_pt))
    assert summary["findings_abnormal"]["n_queries"] == len(prec_abn[1])
    assert summary["ann_recall"]["recall@10"] >= 0.9  # HNSW on a tiny collection: (nearly) exact


def test_separable_vectors_score_perfectly_and_noise_does_not(tmp_path):
    _, _, _, _, clean = _run(tmp_path / "clean", noise=0.0)
    assert clean["anatomy"]["same_anatomy@10"] == 1.0
    assert clean["findings_all"]["precision@1"] == 1.0
    assert clean["findings_abnormal"]["map@10"] == 1.0
    _, _, _, _, noisy = _run(tmp_path / "noisy", noise=3.0)
    assert noisy["anatomy"]["same_anatomy@10"] < 0.8
    assert noisy["findings_abnormal"]["map@10"] < 1.0


def _assert_consistent(block: dict, ks) -> None:
    """Values in [0, 1], hit rate >= MRR, AP and precision, metrics monotone in k."""
    for k in ks:
        vals = {name: block[f"{name}@{k}"] for name in ("precision", "map", "hit_rate", "mrr", "recall")}
        if block["n_queries"] == 0:
            assert all(v is None or math.isnan(v) for v in vals.values())
            continue
        assert all(0.0 <= v <= 1.0 for v in vals.values()), vals
        assert vals["hit_rate"] >= max(vals["precision"], vals["mrr"], vals["map"]) - 1e-12
    for a, b in zip(ks, ks[1:]):
        if block["n_queries"]:
            assert block[f"hit_rate@{b}"] >= block[f"hit_rate@{a}"]
            assert block[f"recall@{b}"] >= block[f"recall@{a}"]
            assert block[f"mrr@{b}"] >= block[f"mrr@{a}"]


def test_summary_is_internally_consistent(noisy):
    _, qry, _, rows, summary = noisy
    for key in ("findings_all", "findings_abnormal", "findings_all_unfiltered", "same_patient"):
        _assert_consistent(summary[key], KS)
    assert summary["anatomy"]["n_queries"] == len(qry)
    assert sum(b["anatomy"]["n_queries"] for b in summary["per_anatomy"].values()) == len(qry)
    curve = summary["pr_curve"]["all"]
    assert len(curve["precision"]) == 20
    assert np.all(np.diff(curve["recall"]) >= 0)
    assert curve["precision"][9] == pytest.approx(summary["findings_all"]["precision@10"])


# ----------------------------------------------------------------------------- end to end


def _walk(block, path=""):
    """Every (path, value) of numeric leaves of a nested report."""
    if isinstance(block, dict):
        for k, v in block.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(block, list):
        for i, v in enumerate(block):
            yield from _walk(v, f"{path}[{i}]")
    elif isinstance(block, float):
        yield path, block


@pytest.fixture(scope="module")
def tiny_report(tiny_archive, tiny_model, tmp_path_factory):
    from regionmir.evaluation.report import write_report
    from regionmir.evaluation.run import evaluate

    out = tmp_path_factory.mktemp("eval")
    cfg = EvalConfig(archive=Path(tiny_archive), model=Path(tiny_model), out=out, ks=(1, 3, 5), curve_depth=10)
    report = evaluate(cfg)
    return report, write_report(report, out), out


def test_end_to_end_writes_strict_json_markdown_and_plots(tiny_report):
    report, files, out = tiny_report
    assert (out / "report.md").read_text().startswith("# RegionMIR evaluation")
    data = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert data["ks"] == [1, 3, 5] and data["search"] == "exact"
    try:
        import matplotlib  # noqa: F401  (only: is it installed?)
    except ImportError:
        assert data["plots"] == []
    else:
        assert sorted(data["plots"]) == ["per_anatomy.png", "pr_curve.png"]
        for name in data["plots"]:
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({name})" in (out / "report.md").read_text()


def test_end_to_end_counts_match_the_archive(tiny_report, tiny_archive):
    from regionmir.archive import Archive

    report, _, _ = tiny_report
    archive = Archive(tiny_archive)
    for split in ("train", "test"):
        sgs = [archive.scene_graph(r.dicom_id) for r in archive.split(split)]
        regions = [r for sg in sgs if sg is not None for r in sg.regions]
        assert report["data"][split]["regions"] == len(regions)
        assert report["data"][split]["abnormal_regions"] == sum(1 for r in regions if r.findings)
    main = report["models"][0]
    assert main["anatomy"]["n_queries"] == report["data"]["test"]["regions"]
    assert main["findings_abnormal"]["n_queries"] + main["findings_abnormal"]["n_without_relevant"] == \
        report["data"]["test"]["abnormal_regions"]


def test_end_to_end_same_patient_queries_match_the_splits(tiny_report, tiny_archive):
    from regionmir.archive import Archive

    report, _, _ = tiny_report
    archive = Archive(tiny_archive)
    studies_of: dict = {}
    expected = 0
    rows = archive.split("test")
    for r in rows:
        sg = archive.scene_graph(r.dicom_id)
        studies_of.setdefault(r.subject_id, []).append((r.study_id, {x.anatomy for x in sg.regions} if sg else set()))
    for studies in studies_of.values():
        for study, anats in studies:
            expected += sum(1 for a in anats if any(a in other for s, other in studies if s != study))
    assert report["models"][0]["same_patient"]["n_queries"] == expected


def test_end_to_end_metrics_are_consistent(tiny_report):
    report, _, _ = tiny_report
    ks = report["ks"]
    for model in report["models"]:
        for path, value in _walk(model):
            if "seconds" not in path and not math.isnan(value) and "loss" not in path:
                assert 0.0 <= value <= 1.0, path
        for key in ("findings_all", "findings_abnormal", "findings_all_unfiltered", "same_patient"):
            _assert_consistent(model[key], ks)
        for k in ks:  # the filter can only help: it drops hits of other anatomies
            assert model["findings_all"][f"precision@{k}"] >= model["findings_all_unfiltered"][f"precision@{k}"] - 1e-9
        trained = model.get("training_result")
        if trained and report["training_report"].get("eval_split") == report["split"]:
            # the ONNX encoder run here reproduces the accuracy `regionmir train` measured in torch
            assert model["anatomy"]["accuracy"] == pytest.approx(trained["accuracy"], abs=2 / model["anatomy"]["n_queries"])


def test_cli_json_and_errors(tiny_archive, tiny_model, tmp_path):
    from typer.testing import CliRunner

    from regionmir.cli.app import app
    from regionmir.errors import ModelError

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["evaluate", str(tiny_archive), "--model", str(tiny_model), "--out", str(out),
                                 "--k", "5,1", "--no-plots", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ks"] == [1, 5]
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md"}
    bad = runner.invoke(app, ["evaluate", str(tiny_archive), "--model", str(tiny_model), "--k", "0,x"])
    assert bad.exit_code != 0 and "--k takes positive integers" in bad.output
    missing = runner.invoke(app, ["evaluate", str(tiny_archive), "--model", str(tmp_path / "nomodel")])
    assert isinstance(missing.exception, ModelError)
    assert "regionmir train" in str(missing.exception)


def test_intervals_bracket_the_means(noisy):
    _, _, _, _, summary = noisy
    k = max(KS)
    for name, (low, high) in summary["ci95"].items():
        block, metric = name.split(".")
        value = summary[block][metric]
        assert low <= value + 1e-9 and value - 1e-9 <= high, (name, low, value, high)
    assert summary["ci95"][f"findings_all.precision@{k}"][0] < summary["ci95"][f"findings_all.precision@{k}"][1]
