"""Ingest runs into an embedded store: counts, payloads, resume, bad files, sharding, racing workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
import pytest
from helpers.ingest import (
    SALT,
    kill_when_ledger_has,
    proc_dirs_with_env,
    processes_with_env,
)

from regionmir.anatomy import Anatomy
from regionmir.archive import Archive, resolve_path
from regionmir.errors import CollectionMismatchError
from regionmir.ingest.runner import IngestConfig, run_ingest
from regionmir.ingest.stages import ImageTask
from regionmir.privacy import mask_path, pseudonym, shown_image_id
from regionmir.store import open_store, point_id


def all_points(name: str = "regions", home: Path | None = None) -> dict[str, dict]:
    """Every point of a collection of the embedded store: id -> payload."""
    from regionmir import config

    store = open_store(path=(home / "store") if home else config.default_store_dir())
    try:
        n = store.count(name)
        dim = int(store.collection_meta(name)["dim"])
        probe = np.ones(dim, np.float32)
        hits = store.search(name, probe, top_k=max(n, 1), exact=True)
        assert len(hits) == n
        return {h.id: h.payload for h in hits}
    finally:
        store.close()


def raw_patient_values(archive: Path) -> set[str]:
    """PatientID and PatientName strings of every DICOM of the archive (what must never leak)."""
    values = set()
    for path in Archive(archive).dicom_paths():
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        for key in ("PatientID", "PatientName"):
            v = str(ds.get(key, "") or "").strip()
            if len(v) >= 3:
                values.add(v)
    return values


def labeled_regions(archive: Path) -> dict[str, tuple]:
    """dicom_id -> labeled regions, straight from the archive's annotations."""
    a = Archive(archive)
    return {p.stem: a.regions(p.stem) for p in a.dicom_paths() if a.regions(p.stem)}


def test_a_kill_before_the_index_build_is_repaired_by_the_rerun(tiny_archive, tiny_model, home, monkeypatch):
    """Every image upserted and in the ledger, the process killed before build_index: the
    rerun has nothing to ingest but must still build the index."""
    from regionmir.store.embedded import EmbeddedStore

    real, built = EmbeddedStore.build_index, []

    def killed(self, name):
        raise KeyboardInterrupt  # stands for the kill: nothing after the last upsert ran

    monkeypatch.setattr(EmbeddedStore, "build_index", killed)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0))
    monkeypatch.setattr(EmbeddedStore, "build_index", lambda self, name: (built.append(name), real(self, name)))
    s = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0))
    assert s.ingested == 0 and s.skipped == s.images and built == ["regions"]
    built.clear()
    s = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0))
    assert s.ingested == 0 and built == []  # built once is enough


def _scores(name: str, probes: np.ndarray) -> dict[str, list[float]]:
    """Point id -> its cosine with each probe (a fingerprint of the stored vector)."""
    from regionmir import config

    store = open_store(path=config.default_store_dir())
    try:
        n, out = store.count(name), {}
        for q in probes:
            for h in store.search(name, q, top_k=n, exact=True):
                out.setdefault(h.id, []).append(h.score)
        return out
    finally:
        store.close()


def test_encoding_in_workers_stores_what_the_main_process_would(tiny_archive, tiny_model, home):
    main = run_ingest(IngestConfig(tiny_archive, tiny_model, collection="main", workers=0))
    pool = run_ingest(IngestConfig(tiny_archive, tiny_model, collection="pool", workers=2, batch_size=40))
    assert main.regions == pool.regions > 0
    probes = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
    a, b = _scores("main", probes), _scores("pool", probes)
    assert a.keys() == b.keys() and len(a) == main.regions
    np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], atol=1e-5)


def test_ingest_counts_and_payloads(tiny_archive, tiny_model, home):
    s = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=1, batch_size=16, report=home / "r.jsonl"))
    labeled = labeled_regions(tiny_archive)
    n_images = len(Archive(tiny_archive).dicom_paths())
    assert s.images == n_images and s.ingested == len(labeled)
    assert s.regions == sum(len(r) for r in labeled.values())
    assert s.failed == 0 and s.skipped == 0 and s.unlabeled == n_images - len(labeled)
    points = all_points()
    assert len(points) == s.regions
    from regionmir.inference.encoder import load_encoder

    model_id = load_encoder(tiny_model).model_id
    archive = Archive(tiny_archive)
    for pid, p in points.items():
        region = next(r for r in labeled[p["image_id"]] if r.anatomy.slug == p["anatomy"])
        path = resolve_path(tiny_archive, p["path"])
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert path.stem == p["image_id"]
        assert pid == point_id(ds.SOPInstanceUID, p["anatomy"], model_id)
        assert p["box"] == region.box.as_list() and p["findings"] == sorted(region.findings)
        assert p["patient"] == pseudonym(str(ds.PatientID)) and p["model_id"] == model_id
        assert p["view"] == ds.get("ViewPosition") and p["modality"] == ds.get("Modality")
        assert p["box_source"] == "annotation" and p["confidence"] is None
        sg = archive.scene_graph(p["image_id"])
        if sg is not None:
            assert p["study_id"] == sg.study_id
    text = json.dumps(points) + (home / "r.jsonl").read_text()
    leaks = [v for v in raw_patient_values(tiny_archive) if v in text]
    assert not leaks, "raw patient values in payloads or report"


def test_the_index_is_built_every_segment_and_at_the_end(tiny_archive, tiny_model, home, monkeypatch):
    """A collection bigger than a segment is indexed as it fills (memory bounded by a segment),
    and stores exactly what one build at the end would."""
    from regionmir.store.embedded import EmbeddedStore

    whole = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0, batch_size=16))
    once = all_points()
    assert open_store(path=home / "store").index_every("regions") == 2_000_000  # the default segment
    shutil.rmtree(home / "store")
    real, built = EmbeddedStore.build_index, []
    monkeypatch.setattr(EmbeddedStore, "index_every", lambda self, name: 40)
    monkeypatch.setattr(EmbeddedStore, "build_index", lambda self, name: (built.append(name), real(self, name)))
    s = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0, batch_size=16))
    assert s.regions == whole.regions and all_points() == once
    # one build each time 40 or more regions (images of <= 36, one per batch) came in, and the last
    assert s.regions // 76 + 1 <= len(built) <= s.regions // 40 + 1 and len(built) >= 3


def test_rerun_adds_nothing_and_skips_all(tiny_archive, tiny_model, home):
    first = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0))
    before = all_points()
    second = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0))
    assert second.skipped == first.ingested and second.ingested == 0 and second.regions == 0
    assert all_points() == before


def test_shards_together_make_the_whole(tiny_archive, tiny_model, home):
    whole = run_ingest(IngestConfig(tiny_archive, tiny_model, collection="whole", workers=0))
    a = run_ingest(IngestConfig(tiny_archive, tiny_model, collection="split", workers=0, shard=(0, 2)))
    b = run_ingest(IngestConfig(tiny_archive, tiny_model, collection="split", workers=0, shard=(1, 2)))
    assert a.images + b.images == whole.images and a.regions + b.regions == whole.regions
    assert a.ingested and b.ingested
    assert all_points("split") == all_points("whole")


def test_other_model_is_refused(tiny_archive, tiny_model, home):
    from regionmir import config

    store = open_store(path=config.default_store_dir())
    store.create_collection("regions", 8, {"model_id": "0123456789abcdef"})
    store.close()
    with pytest.raises(CollectionMismatchError, match="--collection NEW"):
        run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0))


def _bad_archive(src: Path, dst: Path) -> tuple[Path, dict[str, str]]:
    """A copy of ``src`` plus a truncated DICOM, a text file named .dcm and an SR document, and
    one annotated film whose pixels decode to NaN (a NaN RescaleSlope: a poison pill before)."""
    shutil.copytree(src, dst)
    good, poisoned = Archive(dst).dicom_paths()[:2]
    ds = pydicom.dcmread(poisoned)
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = "NaN", "0", "2000", "4000"
    ds.save_as(poisoned)
    folder = good.parent
    data = good.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 3])
    (folder / "notes.dcm").write_text("this is not a DICOM file\n")
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "SR"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "report-sr.dcm")
    return dst, {"truncated", "notes", "report-sr", poisoned.stem}


def test_bad_files_are_reported_and_the_run_goes_on(tiny_archive, tiny_model, home, tmp_path):
    archive, bad = _bad_archive(tiny_archive, tmp_path / "bad")
    report = tmp_path / "report.jsonl"
    s = run_ingest(IngestConfig(archive, tiny_model, workers=1, report=report))
    records = [json.loads(line) for line in report.read_text().splitlines()]
    failed = {r["image_id"]: r for r in records if r["event"] == "failed"}
    assert set(failed) == bad and s.failed == 4
    assert all(r["reason"] for r in failed.values())
    assert any("RescaleSlope nan" in r["reason"] for r in failed.values())  # named, with the why
    assert records[-1]["event"] == "summary" and records[-1]["failed"] == 4
    assert s.ingested == len(labeled_regions(tiny_archive)) - 1  # every film but the poisoned one
    text = report.read_text()
    assert not [v for v in raw_patient_values(tiny_archive) if v in text]


def _strip_annotations(src: Path, dst: Path, n: int = 2) -> tuple[Path, set[str]]:
    """A copy of ``src`` whose first ``n`` images have no scene graph (and no gold CSV)."""
    shutil.copytree(src, dst)
    for p in Archive(dst).dicom_paths()[:n]:
        sg = Archive(dst).scene_graph_path(p.stem)
        if sg:
            sg.unlink()
    (dst / "gold_bbox_coordinate_annotations_1000images.csv").unlink(missing_ok=True)
    bare = {p.stem for p in Archive(dst).dicom_paths() if Archive(dst).regions(p.stem) is None}
    return dst, bare


def model_with_localizer(tiny_model: Path, tiny_localizer: Path, dst: Path) -> Path:
    """A model folder holding the tiny encoder and the tiny localizer."""
    shutil.copytree(tiny_model, dst)
    shutil.copy(Path(tiny_localizer) / "localizer.onnx", dst / "localizer.onnx")
    return dst


def test_unlabeled_images_are_reported_without_a_localizer(tiny_archive, tiny_model, home, tmp_path):
    archive, bare = _strip_annotations(tiny_archive, tmp_path / "bare")
    assert (Path(tiny_model) / "localizer.onnx").is_file() is False
    s = run_ingest(IngestConfig(archive, tiny_model, workers=0, report=tmp_path / "a.jsonl"))
    assert s.unlabeled == len(bare) >= 2 and s.ingested == s.images - len(bare)
    records = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert {r["image_id"] for r in records if r["event"] == "unlabeled"} == bare
    assert not {p["image_id"] for p in all_points().values()} & bare


def test_unlabeled_images_are_located_by_the_localizer(tiny_archive, tiny_model, tiny_localizer, home, tmp_path):
    archive, bare = _strip_annotations(tiny_archive, tmp_path / "bare")
    model = model_with_localizer(tiny_model, tiny_localizer, tmp_path / "model")
    s = run_ingest(IngestConfig(archive, model, workers=1))
    assert s.unlabeled == 0 and s.ingested == s.images
    points = all_points().values()
    predicted = [p for p in points if p["image_id"] in bare]
    assert {p["image_id"] for p in predicted} == bare
    assert all(p["box_source"] == "predicted" and 0.0 <= p["confidence"] <= 1.0 for p in predicted)
    assert {p["anatomy"] for p in predicted} <= {a.slug for a in Anatomy if a.boxed}
    others = [p for p in points if p["image_id"] not in bare]
    assert all(p["box_source"] == "annotation" and p["confidence"] is None for p in others)


def _ingest_cmd(archive: Path, model: Path, *extra: str) -> list[str]:
    cli = Path(sys.executable).parent / "regionmir"
    return [str(cli), "ingest", str(archive), "--model", str(model), "--json", *extra]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the workers")
def test_kill_and_resume_gives_the_clean_result(tiny_archive, tiny_model, tmp_path):
    env = {**os.environ, "REGIONMIR_SALT": SALT, "QDRANT_URL": ""}
    clean_home, killed_home = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(_ingest_cmd(tiny_archive, tiny_model), env={**env, "REGIONMIR_HOME": str(clean_home)},
                   check=True, capture_output=True, timeout=300)
    env_k = {**env, "REGIONMIR_HOME": str(killed_home)}
    proc = subprocess.Popen(_ingest_cmd(tiny_archive, tiny_model, "--batch-size", "1", "--workers", "2"),
                            env=env_k, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n_done = kill_when_ledger_has(proc, killed_home, 2, timeout=240)
    total = len(labeled_regions(tiny_archive))
    assert proc.returncode == -signal.SIGKILL and 2 <= n_done < total, "the kill did not land mid-run"
    left = processes_with_env("REGIONMIR_HOME", str(killed_home), wait_s=10)
    assert not left, f"processes of the killed ingest still alive: {left}"
    out = subprocess.run(_ingest_cmd(tiny_archive, tiny_model), env=env_k, check=True,
                         capture_output=True, text=True, timeout=300)
    summary = json.loads(out.stdout)
    assert summary["skipped"] >= n_done and summary["ingested"] == total - summary["skipped"]
    assert all_points(home=killed_home) == all_points(home=clean_home)


def racing(monkeypatch, loser, winner_moves) -> None:
    """Make ``loser.collections()`` return what it saw *before* ``winner_moves()`` ran: the
    other worker creates the collection between the loser's check and its create."""
    real, stale = loser.collections, []

    def collections():
        seen = real()
        stale.extend(seen)
        winner_moves()
        return seen

    monkeypatch.setattr(loser, "collections", collections)
    if hasattr(loser, "client"):  # the server store checks again just before creating: stale too
        loser.client.collection_exists = lambda name: name in stale


def two_stores(kind: str, tmp_path: Path):
    """Two handles on one store, as two workers have: local-mode server or embedded folder."""
    from regionmir.store.embedded import EmbeddedStore
    from regionmir.store.server import ServerStore

    if kind == "server":
        from qdrant_client import QdrantClient

        client = QdrantClient(location=":memory:")
        return ServerStore(client=client), ServerStore(client=mock.Mock(wraps=client))
    return EmbeddedStore(tmp_path / "store"), EmbeddedStore(tmp_path / "store")


def encoder_like(model_id: str = "model-a", dim: int = 8):
    from types import SimpleNamespace

    return SimpleNamespace(model_id=model_id, dim=dim)


@pytest.mark.parametrize("kind", ["server", "embedded"])
def test_racing_creators_end_with_one_meta_and_one_token(kind, tmp_path, monkeypatch):
    from regionmir.ingest.runner import ensure_collection

    winner, loser = two_stores(kind, tmp_path)
    won = {}
    racing(monkeypatch, loser, lambda: won.update(ensure_collection(winner, "c", encoder_like(), tmp_path)))
    created = []
    real_create = loser.create_collection
    monkeypatch.setattr(loser, "create_collection", lambda *a: created.append(a) or real_create(*a))
    lost = ensure_collection(loser, "c", encoder_like(), tmp_path)
    assert len(created) == 1, "the loser must have tried to create it (the race happened)"
    if kind == "server":  # and the server answered "already exists" (ValueError in local mode)
        assert loser.client.create_collection.call_count == 1
    assert created[0][2]["ingest_token"] != won["ingest_token"]  # its own attempt had another token
    assert lost == won and lost["ingest_token"] == won["ingest_token"]
    assert winner.collections() == loser.collections() == ["c"]
    assert loser.collection_meta("c") == winner.collection_meta("c") == won
    winner.close()
    loser.close()


@pytest.mark.parametrize("kind", ["server", "embedded"])
@pytest.mark.parametrize("other", [encoder_like("model-b", 8), encoder_like("model-a", 16)])
def test_racing_creator_of_another_model_is_refused(kind, other, tmp_path, monkeypatch):
    from regionmir.ingest.runner import ensure_collection

    winner, loser = two_stores(kind, tmp_path)
    racing(monkeypatch, loser, lambda: ensure_collection(winner, "c", other, tmp_path))
    with pytest.raises(CollectionMismatchError):
        ensure_collection(loser, "c", encoder_like(), tmp_path)
    assert winner.collection_meta("c")["model_id"] == other.model_id
    winner.close()
    loser.close()


def test_layout_options_reach_the_server_collection(tiny_archive, tiny_model, home, monkeypatch):
    from qdrant_client import QdrantClient

    local = QdrantClient(location=":memory:")  # stands in for the server; ignores sharding
    monkeypatch.setattr("regionmir.store.server.QdrantClient", lambda **kwargs: local)
    calls, real = [], local.create_collection
    monkeypatch.setattr(local, "create_collection", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setattr(local, "close", lambda: None)  # keep it readable after the run
    cfg = IngestConfig(tiny_archive, tiny_model, qdrant_url="http://qdrant.invalid:6333", workers=0,
                       shards=3, replication_factor=2, write_consistency=1)
    s = run_ingest(cfg)
    (kwargs,) = calls
    assert (kwargs["shard_number"], kwargs["replication_factor"], kwargs["write_consistency_factor"]) == (3, 2, 1)
    assert s.ingested == len(labeled_regions(tiny_archive)) and local.count("regions").count == s.regions


def test_layout_options_are_refused_for_the_embedded_store(tiny_archive, tiny_model, home):
    from regionmir.errors import StoreError

    with pytest.raises(StoreError, match="--shards / QDRANT_SHARDS = 3.*single shard"):
        run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0, shards=3))
    assert not (home / "store").exists()
    env = {**os.environ, "REGIONMIR_HOME": str(home), "REGIONMIR_SALT": SALT, "QDRANT_URL": "",
           "QDRANT_REPLICATION_FACTOR": "2"}
    out = subprocess.run(_ingest_cmd(tiny_archive, tiny_model), env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "QDRANT_REPLICATION_FACTOR = 2" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_layout_options_and_environment_reach_the_config(tiny_archive, monkeypatch):
    from typer.testing import CliRunner

    from regionmir.cli.app import app
    from regionmir.ingest.runner import IngestSummary

    seen = []
    monkeypatch.setattr("regionmir.ingest.runner.run_ingest", lambda cfg, **k: seen.append(cfg) or IngestSummary("c", "s", "m"))
    result = CliRunner().invoke(app, ["ingest", str(tiny_archive), "--json", "--replication-factor", "2"],
                                env={"QDRANT_SHARDS": "3", "QDRANT_WRITE_CONSISTENCY": "1"})
    assert result.exit_code == 0, result.output
    assert (seen[0].shards, seen[0].replication_factor, seen[0].write_consistency) == (3, 2, 1)
    result = CliRunner().invoke(app, ["ingest", str(tiny_archive), "--json", "--shards", "0"])
    assert result.exit_code == 2 and not seen[1:]


def test_rerun_with_another_split_skips_what_the_shards_did(tiny_archive, tiny_model, home):
    a = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0, shard=(0, 2)))
    b = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0, shard=(1, 2)))
    ledgers = sorted(p.name for p in (home / "ledgers").glob("*.done"))
    assert len(ledgers) == 2 and [".shard-0of2." in ledgers[0], ".shard-1of2." in ledgers[1]] == [True, True]
    whole = run_ingest(IngestConfig(tiny_archive, tiny_model, workers=0))
    assert whole.ingested == 0 and whole.skipped == a.ingested + b.ingested
    assert whole.index_seconds == 0.0  # both shards built the index after their last upsert


def test_report_lines_show_paths_as_payloads_do(tmp_path, home):
    """A warning names the image by its payload path, whose patient folder is masked with the
    header's PatientID too: an archive of folders named by patient id must not leak them."""
    from regionmir.ingest.report import Report
    from regionmir.ingest.runner import IngestSummary, _tally
    from regionmir.ingest.stages import Prepared

    rel = "scans/ZZ4242/ZZ4242.dcm"  # a folder and a file named by the PatientID, not MIMIC's p1XXXXXXX
    task = ImageTask(Path(rel), rel, "ZZ4242")
    fields = {"path": mask_path(rel, "ZZ4242"), "image_id": shown_image_id("ZZ4242", "ZZ4242")}
    noted = Prepared(task, "1.2.3", fields, [{"anatomy": "left-lung"}], None, notes=["dropped 1 box"])
    report, summary = Report(tmp_path / "r.jsonl"), IngestSummary("c", "s", "m")
    _tally([noted], [], report, summary)
    report.close()
    (record,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert record["event"] == "warning" and record["path"] == "scans/*/*.dcm"
    assert record["image_id"] == fields["image_id"] != "ZZ4242"
    assert (summary.warnings, summary.ingested, summary.regions) == (1, 1, 1)


def test_folders_named_by_the_patient_are_masked_in_any_layout(tiny_archive, tiny_model, tiny_localizer, home,
                                                                 tmp_path):
    """A hospital export, not MIMIC's layout: folders named by the patient's name, birth date and
    id. Payloads, the report and the ledger show none of them."""
    archive, secrets = tmp_path / "export", []
    for i, src in enumerate(Archive(tiny_archive).dicom_paths()[:4]):
        ds = pydicom.dcmread(src)
        ds.PatientName, ds.PatientBirthDate, ds.PatientID = f"DOE{i}^JANE", f"1970010{i + 1}", f"MRN{i}X"
        folder = archive / f"DOE{i}^JANE_1970-01-0{i + 1}" / f"MRN{i}X"
        folder.mkdir(parents=True)
        ds.save_as(folder / f"img{i}.dcm")
        secrets += [f"DOE{i}", f"MRN{i}X", f"1970-01-0{i + 1}", f"1970010{i + 1}"]
    report = tmp_path / "r.jsonl"
    s = run_ingest(IngestConfig(archive, model_with_localizer(tiny_model, tiny_localizer, tmp_path / "model"),
                                workers=0, report=report))
    assert s.ingested == 4
    stored = all_points(home=home)
    assert {p["path"] for p in stored.values()} == {f"*/*/img{i}.dcm" for i in range(4)}
    shown = json.dumps(list(stored.values())) + report.read_text()
    shown += "".join(p.read_text() for p in (home / "ledgers").glob("*.done"))
    assert not [x for x in secrets if x in shown]


def _worker_pids(home: Path, main: int) -> list[int]:
    """Pool workers of the ingest ``main`` with ``home``: processes of its environment whose parent is
    not ``main`` (the fork server's children; the fork server and resource tracker are main's)."""
    found = []
    for proc in proc_dirs_with_env("REGIONMIR_HOME", str(home)):
        try:
            pid, ppid = int(proc.name), int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if pid != main and ppid != main:
            found.append(pid)
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the workers")
def test_a_killed_worker_ends_the_ingest_with_one_line_and_a_rerun_resumes(tiny_archive, tiny_model, tmp_path):
    """As the kernel's OOM killer does: kill -9 of one decode worker. Once a BrokenProcessPool traceback."""
    home = tmp_path / "home"
    env = {**os.environ, "REGIONMIR_SALT": SALT, "QDRANT_URL": "", "REGIONMIR_HOME": str(home)}
    proc = subprocess.Popen(_ingest_cmd(tiny_archive, tiny_model, "--batch-size", "1", "--workers", "2"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (workers := _worker_pids(home, proc.pid)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers, "no worker process seen"
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip()]
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and "worker process" in lines[-1] and "rerun" in lines[-1], err
    again = subprocess.run(_ingest_cmd(tiny_archive, tiny_model), env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["skipped"] + summary["ingested"] == len(labeled_regions(tiny_archive))


def test_a_scene_graph_naming_one_anatomy_six_times_stores_its_first_box_and_warns(
        tiny_archive, tiny_model, home, tmp_path):
    """Six `left lung` boxes for one image: one point id per anatomy, so the first box is stored,
    the summary counts the points there are, and the report names the anatomy."""
    src = Archive(tiny_archive).dicom_paths()[0]
    archive = tmp_path / "archive"
    (archive / "scene_graph").mkdir(parents=True)
    shutil.copy(src, archive / "film.dcm")
    data = json.loads(Archive(tiny_archive).scene_graph_path(src.stem).read_text())
    data["image_id"] = "film"
    first = next(o for o in data["objects"] if o["bbox_name"] == "left lung")
    for k in range(1, 6):  # five more, each moved by k pixels
        data["objects"].append({**first, **{c: first[c] + k for c in ("original_x1", "original_y1", "original_x2",
                                                                       "original_y2")}})
    (archive / "scene_graph" / "film_SceneGraph.json").write_text(json.dumps(data))
    report = tmp_path / "r.jsonl"
    s = run_ingest(IngestConfig(archive, tiny_model, workers=0, report=report))
    points = all_points(home=home)
    assert s.regions == len(points) == len({o["bbox_name"] for o in data["objects"]})
    (lung,) = [p for p in points.values() if p["anatomy"] == "left-lung"]
    assert lung["box"] == [first[c] for c in ("original_x1", "original_y1", "original_x2", "original_y2")]
    (warning,) = [r for r in map(json.loads, report.read_text().splitlines()) if r["event"] == "warning"]
    assert "left lung: 6 annotated boxes, the first is used" in warning["reason"] and s.warnings == 1


def test_a_duplicate_is_ledgered_so_a_rerun_skips_it(tiny_archive, tiny_model, tiny_localizer, home, tmp_path):
    """A second file with an image's SOPInstanceUID is reported once, then in the ledger: a rerun
    skips it instead of reporting it again (and does not overwrite the first image's points)."""
    src = Archive(tiny_archive).dicom_paths()[0]
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("a.dcm", "b.dcm"):  # the same SOPInstanceUID twice
        shutil.copy(src, archive / name)
    cfg = IngestConfig(archive, model_with_localizer(tiny_model, tiny_localizer, tmp_path / "model"), workers=0)
    first = run_ingest(cfg)
    assert (first.ingested, first.duplicates) == (1, 1)
    again = run_ingest(cfg)
    assert (again.skipped, again.ingested, again.duplicates) == (2, 0, 0)
    assert {p["image_id"] for p in all_points(home=home).values()} == {"a"}
