"""`regionmir doctor` and regionmir.doctor.checks: each check's OK / WARN / FAIL, fix hints, JSON, exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.fake_qdrant import FakeQdrant
from typer.testing import CliRunner

from regionmir.anatomy import ALL
from regionmir.cli.app import app
from regionmir.doctor import checks as health
from regionmir.inference.meta import ModelMeta, model_id_of

onnx = pytest.importorskip("onnx")  # test extra: builds a tiny encoder without torch

CHECKS = ["python", "torch", "codecs", "model", "gpu", "store", "home", "salt"]


@pytest.fixture(autouse=True)
def fresh_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("REGIONMIR_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "250")  # rich: no wrapping inside the strings asserted on
    for var in ("QDRANT_URL", "QDRANT_API_KEY", "REGIONMIR_SALT"):
        monkeypatch.delenv(var, raising=False)
    return home


def tiny_encoder(folder: Path, dim: int = 8, size: int = 16, drop: tuple[str, ...] = ()) -> Path:
    """An ONNX encoder with the RegionMIR contract: image (N,1,S,S) -> embedding, anatomy_logits."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = len(ALL)
    w1 = numpy_helper.from_array(rng.normal(size=(size * size, dim)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(size * size, c)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),  # (N, S*S)
        helper.make_node("MatMul", ["flat", "w1"], ["embedding"]),  # (N, D)
        helper.make_node("MatMul", ["flat", "w2"], ["anatomy_logits"]),  # (N, C)
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim]),
         helper.make_tensor_value_info("anatomy_logits", TensorProto.FLOAT, ["N", c])],
        initializer=[w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMeta(
        model_id=model_id_of(graph.SerializeToString()), kind="encoder", input_size=size, channels=1,
        crop_context=0.1, norm_mean=0.5, norm_std=0.25, anatomies=tuple(a.slug for a in ALL),
        embedding_dim=dim, backbone="tiny", strategy="test", archive_fingerprint="none",
    )
    props = {k: v for k, v in meta.to_props().items() if k not in drop}
    helper.set_model_props(model, props)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "encoder.onnx")
    return folder


def run(*args: str):
    return CliRunner().invoke(app, ["doctor", *args])


def by_name(result) -> dict[str, dict]:
    data = json.loads(result.stdout)
    return {c["name"]: c for c in data["checks"]}


# ---------------------------------------------------------------------------------- the command


def test_fresh_home_reports_missing_model_and_store_with_fixes(fresh_home):
    result = run()
    assert result.exit_code == 1
    out = result.stdout
    assert "FAIL" in out and "No encoder model" in out and "regionmir train" in out
    assert "no embedded store" in out and "regionmir ingest" in out


def test_json_shape(fresh_home):
    result = run("--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # stdout holds the JSON only
    assert set(data) == {"ok", "checks"} and data["ok"] is False
    assert [c["name"] for c in data["checks"]] == CHECKS
    for c in data["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in ("OK", "WARN", "FAIL") and c["detail"]
        assert c["fix"] or c["status"] == "OK"
    checks = by_name(result)
    assert checks["model"]["status"] == "FAIL" and "--model" in checks["model"]["fix"]
    assert checks["store"]["status"] == "WARN" and checks["home"]["status"] == "OK"


def test_unreachable_server_fails_with_a_clear_message():
    result = run("--json", "--qdrant-url", "http://127.0.0.1:1", "--timeout", "0.5")
    store = by_name(result)["store"]
    assert result.exit_code == 1 and store["status"] == "FAIL"
    assert store["detail"].startswith("cannot reach Qdrant at http://127.0.0.1:1")
    assert "docker compose up" in store["fix"]


def test_everything_ready_exits_0(fresh_home, monkeypatch):
    tiny_encoder(fresh_home / "model")
    monkeypatch.setenv("REGIONMIR_SALT", "s" * 64)
    with FakeQdrant(api_key="secret") as q:
        q.collections = ["regions"]
        monkeypatch.setenv("QDRANT_API_KEY", "secret")
        result = run("--json", "--qdrant-url", q.url)
    checks = by_name(result)
    assert result.exit_code == 0, checks
    assert checks["model"]["status"] == "OK" and "8-d, 36 anatomies, 16px" in checks["model"]["detail"]
    assert checks["store"]["status"] == "OK" and "collections: regions" in checks["store"]["detail"]
    assert "s" * 64 not in result.stdout  # the salt is never printed


# ------------------------------------------------------------------------------------ checks


def test_model_without_metadata_fails(tmp_path):
    folder = tiny_encoder(tmp_path / "m", drop=("embedding_dim", "anatomies"))
    check, file = health.check_model_folder(folder)
    assert check.status == "FAIL" and file is None
    assert "lacks RegionMIR metadata" in check.detail and "anatomies" in check.detail


def test_model_whose_outputs_disagree_with_its_metadata_fails(tmp_path, monkeypatch):
    folder = tiny_encoder(tmp_path / "m", dim=8)
    real = ModelMeta.from_props.__func__

    def lying(cls, props, source="model"):
        return real(cls, {**props, "embedding_dim": "16"}, source)

    monkeypatch.setattr(ModelMeta, "from_props", classmethod(lying))
    check, _ = health.check_model_folder(folder)
    assert check.status == "FAIL" and "disagree with its metadata" in check.detail


def test_server_key_refused_or_missing(monkeypatch):
    with FakeQdrant(api_key="secret") as q:
        wrong = health.check_store(q.url, "nope")
        missing = health.check_store(q.url, None)
    assert wrong.status == missing.status == "FAIL"
    assert "refused" in wrong.detail and "is required" in missing.detail
    assert "QDRANT_API_KEY" in wrong.fix


def test_server_not_ready_or_too_old_warns():
    with FakeQdrant(version="1.12.0") as q:
        old = health.check_store(q.url)
        q.version, q.ready, q.peers = "1.20.0", False, 3
        starting = health.check_store(q.url)
    assert old.status == "WARN" and "more than one minor version" in old.detail
    assert starting.status == "WARN" and "not ready" in starting.detail and "cluster of 3 peers" in starting.detail


def test_embedded_store_counts_and_lock(fresh_home):
    from regionmir.store import PointRecord, point_id
    from regionmir.store.embedded import EmbeddedStore

    store = EmbeddedStore(fresh_home / "store")
    store.create_collection("regions", 4, {"model_id": "m" * 16})
    store.upsert("regions", [PointRecord(point_id(f"im{i}", "left-lung", "m" * 16), np.ones(4, np.float32),
                                         {"anatomy": "left-lung"}) for i in range(3)])
    busy = health.check_store()  # our `store` still holds the shard open, as a running ingest would
    store.close()
    free = health.check_store()
    assert busy.status == "WARN" and "in use by another process: regions" in busy.detail
    assert free.status == "OK" and "regions (3 points)" in free.detail


def test_missing_codec_fails_with_the_pip_command(monkeypatch):
    from regionmir.doctor import codecs as codectest

    def broken():
        raise ImportError("No module named 'openjpeg'", name="openjpeg")

    monkeypatch.setattr(codectest, "round_trip_lossless", broken)
    check = health.check_codecs()
    assert check.status == "FAIL" and "openjpeg" in check.detail
    assert "pip install" in check.fix and "pylibjpeg-openjpeg" in check.fix


def test_codecs_really_round_trip():
    assert health.check_codecs().status == "OK"


GPU_NODES = ("/dev/nvidia0", "/dev/dxg")
CPU_ONLY, WITH_CUDA = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_gpu_check_on_this_machine_is_quiet_and_exact(capfd):
    """Unpatched: the real device nodes, CUDA driver and onnxruntime of the machine running the tests."""
    import os

    import regionmir.inference.runtime as runtime

    check = health.check_gpu()
    if not any(os.path.exists(p) for p in GPU_NODES):  # a laptop, CI, this dev box: encoding on CPU is fine
        assert check.status == "OK" and check.fix == ""
        assert check.detail.startswith("no NVIDIA GPU: encoding runs on CPU")
    else:  # a GPU box: usable exactly when the driver initialises and onnxruntime has the CUDA provider
        usable = runtime.cuda_device_present() and "CUDAExecutionProvider" in runtime.ort().get_available_providers()
        assert check.status == ("OK" if usable else "WARN")
        assert check.detail.startswith("CUDA GPU usable") == usable
    assert "CUDA failure" not in capfd.readouterr().err


@pytest.mark.parametrize("node, driver, providers, session, status, detail, fix", [
    (False, False, CPU_ONLY, None, "OK", "no NVIDIA GPU: encoding runs on CPU; providers: CPU", ""),
    (False, False, WITH_CUDA, None, "OK", "no NVIDIA GPU: encoding runs on CPU (onnxruntime-gpu is installed; "
                                          "it runs on CPU here); providers: CUDA, CPU", ""),
    (True, False, WITH_CUDA, None, "WARN", "the CUDA driver does not initialise", "nvidia-smi"),
    (True, True, CPU_ONLY, None, "WARN", "onnxruntime has no CUDA provider (CPU)", "pip install onnxruntime-gpu"),
    (True, True, WITH_CUDA, False, "WARN", "could not start the CUDA provider", "onnxruntime-gpu[cuda,cudnn]"),
    (True, True, WITH_CUDA, True, "OK", "CUDA GPU usable; providers: CUDA, CPU", ""),
    (True, True, WITH_CUDA, None, "OK", "CUDA GPU usable; providers: CUDA, CPU", ""),  # no model to try
], ids=["no-gpu", "no-gpu-ort-gpu", "broken-driver", "no-cuda-provider", "no-cudnn", "usable", "usable-no-model"])
def test_gpu_check_names_each_case(monkeypatch, node, driver, providers, session, status, detail, fix):
    import os

    import regionmir.inference.runtime as runtime

    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: node if p in GPU_NODES else real_exists(p))
    monkeypatch.setattr(runtime, "cuda_device_present", lambda: driver)
    monkeypatch.setattr(runtime.ort(), "get_available_providers", lambda: providers)
    monkeypatch.setattr(health, "_cuda_session_works", lambda ort, model_file: session)
    check = health.check_gpu(None if session is None else Path("encoder.onnx"))
    assert (check.status, check.fix == "") == (status, fix == "")
    assert (check.detail == detail) if status == "OK" else (detail in check.detail and fix in check.fix)


def test_home_that_is_a_file_fails(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "file"))
    assert health.check_home().status == "FAIL"
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "new" / "home"))
    assert "will be created" in health.check_home().detail


def test_salt_present_or_not(fresh_home, monkeypatch):
    assert health.check_salt().status == "WARN"
    (fresh_home / "salt").write_text("\n")
    assert health.check_salt().status == "FAIL"
    (fresh_home / "salt").write_text("abc")
    assert health.check_salt().status == "OK"
    monkeypatch.setenv("REGIONMIR_SALT", "from-env")
    assert "REGIONMIR_SALT is set" in health.check_salt().detail


def test_missing_required_package_fails(monkeypatch):
    real = health._version
    monkeypatch.setattr(health, "_version", lambda d: None if d == "qdrant-client" else real(d))
    check = health.check_python()
    assert check.status == "FAIL" and "missing: qdrant-client" in check.detail


def test_model_that_cannot_run_fails(tmp_path, monkeypatch):
    folder = tiny_encoder(tmp_path / "m", size=16)
    real = ModelMeta.from_props.__func__
    monkeypatch.setattr(ModelMeta, "from_props",
                        classmethod(lambda cls, props, source="model": real(cls, {**props, "input_size": "24"}, source)))
    check, file = health.check_model_folder(folder)
    assert check.status == "FAIL" and file is None
    assert "forward pass on one 24px crop failed" in check.detail


def test_gpu_present_but_cuda_provider_unusable_is_a_quiet_warning(tmp_path, monkeypatch, capfd):
    import os

    import regionmir.inference.runtime as runtime

    file = tiny_encoder(tmp_path / "m") / "encoder.onnx"
    ort = runtime.ort()
    if "CUDAExecutionProvider" in ort.get_available_providers() and not runtime.cuda_device_present():
        assert health._cuda_session_works(ort, file) is False  # this machine: provider, no GPU
        assert "CUDA" not in capfd.readouterr().err  # and no error spam
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/dev/nvidia0" or real_exists(p))
    monkeypatch.setattr(runtime, "cuda_device_present", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    seen = []
    monkeypatch.setattr(health, "_cuda_session_works", lambda o, f: seen.append(f) or False)
    check = health.check_gpu(file)
    assert check.status == "WARN" and "could not start the CUDA provider" in check.detail and seen == [file]


def test_unusable_localizer_beside_the_encoder_warns(tmp_path):
    folder = tiny_encoder(tmp_path / "m")
    (folder / "localizer.onnx").write_bytes(b"not an onnx file")
    check, file = health.check_model_folder(folder)
    assert check.status == "WARN" and "localizer unusable" in check.detail
    assert file == folder / "encoder.onnx"  # the encoder itself is fine


# ---------------------------------------------------------------------------------- damage


@pytest.mark.parametrize("bad", [b"\xff\xfe\x00\x80", "folder"], ids=["not UTF-8", "a folder"])
def test_a_damaged_salt_fails_with_a_fix(fresh_home, bad):
    """A binary salt gave a traceback; a salt folder was reported as WARN "no salt yet"."""
    salt = fresh_home / "salt"
    if bad == "folder":
        salt.mkdir()
    else:
        salt.write_bytes(bad)
    check = health.check_salt()
    assert check.status == "FAIL" and str(salt) in check.detail
    assert ("a folder" if bad == "folder" else "not text") in check.detail and "backup" in check.fix


def _read_only_check_home(home: Path) -> list[str]:
    """``check_home`` in a child that sees ``home`` as a read-only bind mount (needs root)."""
    import sys

    code = "from regionmir.doctor.checks import check_home; c = check_home(); print(c.status, c.detail)"
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(home), sys.executable, "-c", code]


def test_a_read_only_home_fails(fresh_home):
    """Tests run as root, where chmod stops nothing: a read-only mount is what a user meets."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("unshare") or \
            subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode:
        pytest.skip("needs root and mount namespaces (unshare -m) to mount the home read-only")
    result = subprocess.run(_read_only_check_home(fresh_home), capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "REGIONMIR_HOME": str(fresh_home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("FAIL") and "not writable" in result.stdout, result.stdout
    assert health.check_home().status == "OK"  # the same home, writable, outside the namespace


def _filled_home(home: Path, points_per_image: int = 6, images: int = 4) -> tuple[Path, str]:
    """An embedded collection with ``images`` images' points and the ledger an ingest writes."""
    from regionmir.ingest.ledger import Ledger, ledger_path
    from regionmir.ingest.stages import ImageTask
    from regionmir.store import PointRecord, point_id
    from regionmir.store.embedded import EmbeddedStore

    slugs = [a.slug for a in ALL[:points_per_image]]
    store = EmbeddedStore(home / "store")
    store.create_collection("regions", 4, {"model_id": "m" * 16, "ingest_token": "tok"})
    ledger = Ledger(ledger_path(store.location, "regions"), "tok")
    rng = np.random.default_rng(0)
    for i in range(images):
        task = ImageTask(Path(f"files/im{i}.dcm"), f"files/im{i}.dcm", f"im{i}")
        store.upsert("regions", [PointRecord(point_id(f"1.2.{i}", s, "m" * 16), rng.normal(size=4).astype(np.float32),
                                             {"anatomy": s, "image_id": f"im{i}"}) for s in slugs])
        assert ledger.claim(task, f"1.2.{i}", task.rel, len(slugs), task.image_id) is None
        ledger.mark([task])
    ledger.close()
    store.close()
    (segment,) = (home / "store" / "regions" / "shard" / "segments").iterdir()
    return segment / "mutable_id_tracker.mappings", store.location


def test_points_the_store_lost_while_the_ledger_lists_them_fail(fresh_home):
    """Damaged id-tracker files drop points; an ingest skipped their images and doctor said OK."""
    mappings, _ = _filled_home(fresh_home)
    assert health.check_store().status == "OK"
    with mappings.open("r+b") as f:
        f.truncate(100)
    check = health.check_store()
    assert check.status == "FAIL", check
    assert "lists 4 images with 24 points" in check.detail and "regionmir ingest ARCHIVE" in check.fix


@pytest.mark.parametrize("damage", ["meta", "segments"])
def test_a_damaged_collection_fails_with_the_fix(fresh_home, damage):
    import shutil

    _filled_home(fresh_home)
    folder = fresh_home / "store" / "regions"
    if damage == "meta":
        (folder / "meta.json").write_text("[1, 2]")
    else:
        shutil.rmtree(folder / "shard" / "segments")
    check = health.check_store()
    assert check.status == "FAIL" and ("meta.json" if damage == "meta" else "segments") in check.detail
    assert f"rm -r {folder}" in check.fix and "regionmir ingest" in check.fix
