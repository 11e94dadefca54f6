"""`regionmir search`, `info` and `ingest` through the CLI: every option and every error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.ingest import ingested_home
from PIL import Image
from typer.testing import CliRunner

from regionmir.anatomy import Anatomy
from regionmir.archive import Archive
from regionmir.cli.app import app
from regionmir.errors import (
    CollectionMismatchError,
    ImageReadError,
    ModelError,
    StoreError,
    StoreNotFoundError,
    StoreUnavailableError,
    UnknownAnatomyError,
)
from regionmir.store import PointRecord, open_store, point_id

SALT = "test-salt-cli"
runner = CliRunner()


@pytest.fixture(scope="module")
def indexed(tiny_archive, tiny_model, tmp_path_factory) -> Path:
    """A $REGIONMIR_HOME whose embedded store holds the tiny archive in collection `regions`."""
    return ingested_home(tmp_path_factory.mktemp("cli-home"), tiny_archive, tiny_model, SALT)


@pytest.fixture(autouse=True)
def env(indexed, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(indexed))
    monkeypatch.setenv("REGIONMIR_SALT", SALT)
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # wide rich tables: no ellipsis in cells


@pytest.fixture
def query(tiny_archive) -> tuple[Path, str]:
    """A labeled image of the archive and the slug of its first region."""
    a = Archive(tiny_archive)
    path = next(p for p in a.dicom_paths() if a.regions(p.stem))
    return path, a.regions(path.stem)[0].anatomy.slug


def run(*args: str, model: Path | None = None):
    extra = ["--model", str(model)] if model is not None else []
    return runner.invoke(app, [*args, *extra])


def run_json(*args: str, model: Path) -> dict:
    result = run(*args, "--json", model=model)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stdout is the JSON document and nothing else


def test_table_output(query, tiny_model):
    path, slug = query
    result = runner.invoke(app, ["search", "--anatomy", slug, str(path), "--model", str(tiny_model)],
                           env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    for column in ("rank", "score", "study", "image", "box", "findings"):
        assert column in result.stdout
    assert "in the collection" in result.stdout and f"{slug}: top" in result.stdout
    assert "files/" not in result.stdout  # an 80-column terminal gets no path column


def test_table_shows_paths_when_wide(query, tiny_model):
    path, slug = query
    result = runner.invoke(app, ["search", "--anatomy", slug, str(path), "--model", str(tiny_model)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "path" in result.stdout and "files/" in result.stdout


def test_json_top_k_and_exact(query, tiny_model):
    path, slug = query
    doc = run_json("search", "--anatomy", slug, str(path), "--top-k", "3", model=tiny_model)
    assert [r["rank"] for r in doc["results"]] == [1, 2, 3]
    assert all(r["anatomy"] == slug and r["image_id"] != path.stem for r in doc["results"])
    assert doc["query"]["in_collection"] and doc["query"]["same_patient_excluded"]
    exact = run_json("search", "-a", slug, str(path), "-k", "3", "--exact", model=tiny_model)
    assert [r["id"] for r in exact["results"]] == [r["id"] for r in doc["results"]]


def test_box_and_scene_graph_sources(query, tiny_model, tiny_archive):
    path, slug = query
    doc = run_json("search", "-a", slug, str(path), "--box", "10,10,60,80", model=tiny_model)
    assert doc["query"]["regions"] == [{"anatomy": slug, "box": [10.0, 10.0, 60.0, 80.0], "source": "box"}]
    sg = Archive(tiny_archive).scene_graph_path(path.stem)
    if sg is not None:
        doc = run_json("search", "-a", slug, str(path), "--scene-graph", str(sg), model=tiny_model)
        assert doc["query"]["regions"][0]["source"] == "archive"  # the collection's own boxes win
    bad = run("search", "-a", slug, str(path), "--box", "1,2,3", model=tiny_model)
    assert bad.exit_code == 2 and "four numbers" in bad.output


def test_where_study_and_patient_options(query, tiny_model):
    path, slug = query
    doc = run_json("search", "-a", slug, str(path), "--where", "view=PA", "--where", "view=AP", "-k", "50",
                   model=tiny_model)
    assert all(r["view"] in ("PA", "AP") for r in doc["results"])
    wide = run_json("search", "-a", "cardiac-silhouette", str(path), "-k", "1000", "--include-same-patient",
                    model=tiny_model)["results"]
    findings = sorted({f for r in wide for f in r["findings"]})
    assert findings, "the phantom archive has hearts with findings: the filter must meet some"
    f = findings[0]
    doc = run_json("search", "-a", "cardiac-silhouette", str(path), "--where", f"findings={f}", "-k", "1000",
                   "--include-same-patient", model=tiny_model)
    with_f = [r for r in wide if f in r["findings"]]
    assert doc["results"] and all(f in r["findings"] for r in doc["results"])
    assert len(doc["results"]) == len(with_f) < len(wide)  # every match, and only matches
    study = doc["results"][0]["study_id"]
    doc = run_json("search", "-a", slug, str(path), "--study", study, model=tiny_model)
    assert {r["study_id"] for r in doc["results"]} == {study}
    incl = run_json("search", "-a", slug, str(path), "--include-same-patient", "-k", "100", model=tiny_model)
    excl = run_json("search", "-a", slug, str(path), "--exclude-same-patient", "-k", "100", model=tiny_model)
    assert not incl["query"]["same_patient_excluded"] and excl["query"]["same_patient_excluded"]
    assert {r["id"] for r in excl["results"]} <= {r["id"] for r in incl["results"]}
    assert path.stem not in {r["image_id"] for r in incl["results"]}
    bad = run("search", "-a", slug, str(path), "--where", "colour=red", model=tiny_model)
    assert bad.exit_code == 2 and "--where" in bad.output and "not searchable" in bad.output


def _hand_ctr(archive: Path, image_id: str) -> float:
    """The film's CTR from its scene graph, written out: heart width over the lungs' outer span."""
    b = {r.anatomy.slug: r.box for r in Archive(archive).regions(image_id)}
    heart, right, left = b["cardiac-silhouette"], b["right-lung"], b["left-lung"]
    return round((heart.x2 - heart.x1) / (max(right.x2, left.x2) - min(right.x1, left.x1)), 3)


def test_ctr_ranges_filter_and_every_result_shows_its_ctr(query, tiny_model, tiny_archive):
    path, _ = query
    every = run_json("search", "-a", "left-lung", str(path), "-k", "1000", "--include-same-patient",
                     model=tiny_model)
    assert every["query"]["ctr"] == _hand_ctr(tiny_archive, path.stem)  # the query film's own, as stored
    assert {r["image_id"]: r["ctr"] for r in every["results"]} == {
        r["image_id"]: _hand_ctr(tiny_archive, r["image_id"]) for r in every["results"]}
    for where, keep in ((["ctr>0.5"], lambda c: c > 0.5), (["ctr<=0.455"], lambda c: c <= 0.455),
                        (["ctr>=0.45", "ctr<0.53", "view=PA"], lambda c: 0.45 <= c < 0.53)):
        args = [a for w in where for a in ("--where", w)]
        doc = run_json("search", "-a", "left-lung", str(path), *args, "-k", "1000", "--include-same-patient",
                       model=tiny_model)
        want = [r for r in every["results"] if keep(r["ctr"]) and ("view=PA" not in where or r["view"] == "PA")]
        assert doc["results"] and 0 < len(want) < len(every["results"]), where
        assert [r["id"] for r in doc["results"]] == [r["id"] for r in want], where  # every match, in rank order
    table = run("search", "-a", "left-lung", str(path), "--where", "ctr>0.5", "--include-same-patient",
                model=tiny_model).stdout
    assert f"CTR {every['query']['ctr']:.3f}" in table
    assert any("rank" in line and "ctr" in line for line in table.splitlines())  # the header row
    shown = [r for r in every["results"] if r["ctr"] > 0.5][:3]
    assert all(f"{r['ctr']:.3f}" in table for r in shown)


def test_a_query_without_heart_and_lung_boxes_has_no_ctr_and_bad_ranges_are_usage_errors(query, tiny_model,
                                                                                         tiny_archive, tmp_path):
    import shutil

    path, slug = query
    outside = tmp_path / "outside.dcm"  # not in the collection: only the --box is known of it
    shutil.copy(path, outside)
    doc = run_json("search", "-a", slug, str(outside), "--box", "10,10,90,90", model=tiny_model)
    assert doc["query"]["ctr"] is None and not doc["query"]["in_collection"]
    for bad, says in (("ctr>abc", "'abc' is not a number"), ("view>PA", "only numeric fields (ctr)"),
                      ("ctr", "--where 'ctr>0.5'")):
        r = run("search", "-a", slug, str(path), "--where", bad, model=tiny_model)
        assert r.exit_code == 2 and "Invalid value for --where" in r.output and says in r.output, r.output
    r = run("search", "-a", slug, str(path), "--where", "ctr>0.9", model=tiny_model)
    a = Archive(tiny_archive)
    ctrs = [_hand_ctr(tiny_archive, p.stem) for p in a.dicom_paths() if a.regions(p.stem)]
    assert max(ctrs) < 0.9 and r.exit_code == 1
    assert f"--where ctr>0.9 matches no region of collection 'regions'; ctr values there: {min(ctrs):g} to " \
           f"{max(ctrs):g}." in str(r.exception)


def test_anatomy_all_ranks_studies(query, tiny_model):
    path, _ = query
    doc = run_json("search", "--anatomy", "all", str(path), "-k", "4", model=tiny_model)
    scores = [s["score"] for s in doc["studies"]]
    assert 1 <= len(scores) <= 4 and scores == sorted(scores, reverse=True)
    assert len(doc["query"]["regions"]) == len(doc["studies"][0]["regions"])
    table = run("search", "--anatomy", "all", str(path), "-k", "4", model=tiny_model)
    assert table.exit_code == 0 and "regions matched" in table.stdout


def test_anatomy_all_montage_shows_the_query_image_and_best_images(query, tiny_model, tmp_path):
    from regionmir.search.montage import LABEL, TILE

    path, _ = query
    out = tmp_path / "all.png"
    doc = run_json("search", "--anatomy", "all", str(path), "-k", "3", "--montage", str(out), model=tiny_model)
    assert Image.open(out).size == (TILE * (1 + len(doc["studies"])), TILE + LABEL)


def test_montage_shows_query_and_hits(query, tiny_model, tmp_path):
    path, slug = query
    out = tmp_path / "m.png"
    result = run("search", "-a", slug, str(path), "-k", "3", "--montage", str(out), model=tiny_model)
    assert result.exit_code == 0, result.output
    img = Image.open(out)
    from regionmir.search.montage import LABEL, TILE

    assert img.size == (TILE * 4, TILE + LABEL)  # query crop + 3 hits
    # every hit tile shows its image (not the grey placeholder of a missing file) and a red box
    px = img.convert("RGB").load()
    for k in range(1, 4):
        reds = sum(1 for x in range(k * TILE, (k + 1) * TILE, 2) for y in range(0, TILE, 2)
                   if px[x, y][0] > 200 and px[x, y][1] < 80)
        assert reds > 0


def test_one_collection_check_per_search(query, tiny_model, monkeypatch):
    """The CLI reads the collection once (while the model loads) and hands it to the Searcher."""
    import regionmir.search.searcher as searcher_module
    import regionmir.store.collection as collection_module

    calls = []
    real = collection_module.require_collection

    def counted(store, name):
        calls.append(name)
        return real(store, name)

    monkeypatch.setattr(collection_module, "require_collection", counted)
    monkeypatch.setattr(searcher_module, "require_collection", counted)
    path, slug = query
    doc = run_json("search", "-a", slug, str(path), "-k", "2", model=tiny_model)
    assert len(doc["results"]) == 2 and calls == ["regions"]


def test_errors(query, tiny_model, tmp_path, indexed):
    path, slug = query
    r = run("search", "--anatomy", "left-lng", str(path), model=tiny_model)
    assert isinstance(r.exception, UnknownAnatomyError) and "left-lung" in str(r.exception)
    text = tmp_path / "x.dcm"
    text.write_text("not an image")
    r = run("search", "-a", slug, str(text), model=tiny_model)
    assert isinstance(r.exception, ImageReadError)
    r = run("search", "-a", slug, str(path), "--collection", "nope", model=tiny_model)
    assert isinstance(r.exception, StoreNotFoundError) and "nope" in str(r.exception)
    r = run("search", "-a", slug, str(path), model=tmp_path / "no-model")
    assert isinstance(r.exception, ModelError)
    from regionmir.inference.encoder import load_encoder

    enc = load_encoder(tiny_model)
    store = open_store(path=indexed / "store")
    try:
        store.create_collection("empty", enc.dim, {"model_id": enc.model_id})
        store.create_collection("partial", enc.dim, {"model_id": enc.model_id})
        store.create_collection("model-b", enc.dim, {"model_id": "bbbbbbbbbbbbbbbb"})
        vec = [1.0] + [0.0] * (enc.dim - 1)
        payload = {"anatomy": "trachea", "image_id": "x", "study_id": "s", "patient": None, "box": [0, 0, 9, 9],
                   "view": "PA", "modality": "DX", "path": "x.dcm", "model_id": enc.model_id, "findings": [],
                   "box_source": "annotation", "confidence": None}
        store.upsert("partial", [PointRecord(point_id("x", "trachea", enc.model_id), vec, payload)])
    finally:
        store.close()
    r = run("search", "-a", slug, str(path), "--collection", "empty", model=tiny_model)
    assert isinstance(r.exception, StoreNotFoundError) and "is empty" in str(r.exception)
    r = run("search", "-a", slug, str(path), "--collection", "model-b", model=tiny_model)
    assert isinstance(r.exception, CollectionMismatchError)
    assert f"'model-b' was filled by model bbbbbbbbbbbbbbbb ({enc.dim}-d vectors), not by model {enc.model_id}" \
        in str(r.exception) and "--collection NEW" in str(r.exception)
    r = run("search", "-a", "left-lung", str(path), "--collection", "partial", model=tiny_model)
    assert isinstance(r.exception, StoreError) and "no left-lung regions" in str(r.exception)
    assert "trachea" in str(r.exception)


def test_unreachable_server(query, tiny_model, monkeypatch):
    monkeypatch.setattr("regionmir.store.retry.time.sleep", lambda s: None)  # no back-off waits
    path, slug = query
    r = run("search", "-a", slug, str(path), "--qdrant-url", "http://127.0.0.1:9", model=tiny_model)
    assert isinstance(r.exception, StoreUnavailableError), r.output
    assert "127.0.0.1:9" in str(r.exception)


def test_no_store_yet(query, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "empty-home"))
    path, slug = query
    r = run("search", "-a", slug, str(path), model=tiny_model)
    assert isinstance(r.exception, StoreNotFoundError) and "regionmir ingest ARCHIVE" in str(r.exception)
    doc = json.loads(run("info", "--json").stdout)
    assert doc["collections"] == []
    assert "regionmir ingest ARCHIVE" in run("info").stdout


def test_info(tiny_archive, tiny_model):
    from regionmir.inference.encoder import load_encoder

    doc = json.loads(run("info", "--json").stdout)
    regions = next(c for c in doc["collections"] if c["name"] == "regions")
    a = Archive(tiny_archive)
    expected: dict[str, int] = {}
    for p in a.dicom_paths():
        for r in a.regions(p.stem) or ():
            expected[r.anatomy.slug] = expected.get(r.anatomy.slug, 0) + 1
    assert regions["per_anatomy"] == dict(sorted(expected.items()))
    assert regions["points"] == sum(expected.values())
    assert regions["model_id"] == load_encoder(tiny_model).model_id
    assert regions["dim"] == load_encoder(tiny_model).dim  # read from the collection's `dim`
    ctrs = [_hand_ctr(tiny_archive, p.stem) for p in a.dicom_paths() if a.regions(p.stem)]
    assert regions["ctr_range"] == [min(ctrs), max(ctrs)]
    assert doc["store"].endswith("store")
    table = run("info").stdout
    assert regions["model_id"] in table and Anatomy.parse(next(iter(expected))).slug in table
    assert f"cardiothoracic ratio: {min(ctrs):.3f} to {max(ctrs):.3f}" in table


def test_ingest_cli(tiny_archive, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "h"))
    r = runner.invoke(app, ["ingest", str(tiny_archive), "--model", str(tiny_model), "--collection", "c",
                            "--workers", "0", "--shard", "1/2", "--batch-size", "8", "--json",
                            "--report", str(tmp_path / "r.jsonl")])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["collection"] == "c" and s["images"] > 0 and (tmp_path / "r.jsonl").is_file()
    r = runner.invoke(app, ["ingest", str(tiny_archive), "--model", str(tiny_model), "--collection", "c",
                            "--workers", "0", "--shard", "0/2"])
    assert r.exit_code == 0 and "ingested" in r.stdout and "skipped" in r.stdout
    bad = runner.invoke(app, ["ingest", str(tiny_archive), "--shard", "2/2"])
    assert bad.exit_code == 2 and "0 <= i < n" in bad.output


def _cli(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    import os

    code = (
        "import sys\n"
        "from regionmir.cli.app import main\n"
        f"sys.argv = ['regionmir', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "heavy = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
        "ingest = sorted(m for m in sys.modules if m.startswith('regionmir.ingest'))\n"
        "print('INGEST=' + ','.join(ingest), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "REGIONMIR_HOME": str(env_home), "REGIONMIR_SALT": SALT, "COLUMNS": "200"}
    env.pop("QDRANT_URL", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_search_imports_no_torch_nor_ingest_and_errors_are_one_red_line(query, tiny_model, indexed):
    path, slug = query
    ok = _cli("search", "-a", slug, str(path), "--model", str(tiny_model), "--json", env_home=indexed)
    assert ok.returncode == 0, ok.stderr
    assert "HEAVY=\n" in ok.stderr, ok.stderr
    assert "INGEST=\n" in ok.stderr, ok.stderr  # search never reaches the ingest side
    json.loads(ok.stdout)
    bad = _cli("search", "-a", "left-lng", str(path), "--model", str(tiny_model), env_home=indexed)
    lines = [x for x in bad.stderr.splitlines() if not x.startswith(("HEAVY=", "INGEST="))]
    assert bad.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: Unknown anatomy")
    assert "Traceback" not in bad.stderr


def test_localizer_finds_the_region_of_an_image_outside_the_collection(query, tiny_model, tiny_localizer, tmp_path):
    import shutil

    path, _ = query
    outside = tmp_path / "outside.dcm"
    shutil.copy(path, outside)
    r = run("search", "-a", "left-lung", str(outside), model=tiny_model)
    assert isinstance(r.exception, ModelError) and "--box" in str(r.exception)
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    shutil.copy(Path(tiny_localizer) / "localizer.onnx", model / "localizer.onnx")
    doc = run_json("search", "-a", "left-lung", str(outside), model=model)
    q = doc["query"]
    assert not q["in_collection"] and not q["same_patient_excluded"]
    assert [(x["anatomy"], x["source"]) for x in q["regions"]] == [("left-lung", "localizer")]
    assert doc["results"] and all(r["anatomy"] == "left-lung" for r in doc["results"])


def test_console_script_ingests_the_ctr_and_filters_by_it_as_the_readme_says(tiny_archive, tiny_model, tmp_path):
    """The installed `regionmir`, as a user runs it: ingest, then `--where 'ctr>0.5'` through a shell."""
    import os
    import shlex
    from types import SimpleNamespace

    from helpers.catalogue import CLI, SALT, cli

    w = SimpleNamespace(home=tmp_path / "home")
    done = cli(w, "ingest", str(tiny_archive), "--model", str(tiny_model), "--workers", "0", "--json")
    assert done.returncode == 0, done.stderr
    a = Archive(tiny_archive)
    path = next(p for p in a.dicom_paths() if a.regions(p.stem))
    ask = ("search", "-a", "cardiac-silhouette", str(path), "--model", str(tiny_model), "--include-same-patient",
           "--exact", "--json")
    every = json.loads(cli(w, *ask, "-k", "1000").stdout)["results"]
    enlarged = [r["id"] for r in every if r["ctr"] > 0.5]
    assert 0 < len(enlarged) < len(every)  # the phantom has hearts on both sides of 0.5
    for k in (2, 1000):  # as many as there are, up to top-k, best first
        found = cli(w, *ask, "--where", "ctr>0.5", "-k", str(k))
        assert found.returncode == 0, found.stderr
        hits = json.loads(found.stdout)["results"]
        assert [r["id"] for r in hits] == enlarged[:k] and all(r["ctr"] > 0.5 for r in hits)
    env = {**os.environ, "REGIONMIR_HOME": str(w.home), "REGIONMIR_SALT": SALT, "QDRANT_URL": ""}
    line = shlex.join([str(CLI), *ask, "-k", "1000"])
    quoted = subprocess.run(["bash", "-c", f"{line} --where 'ctr>0.5'"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=240, check=False)
    assert quoted.returncode == 0 and [r["id"] for r in json.loads(quoted.stdout)["results"]] == enlarged
    bare = subprocess.run(["bash", "-c", f"{line} --where ctr>0.5"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240, check=False)  # the shell redirects into a file "0.5"
    lines = bare.stderr.strip().splitlines()
    assert bare.returncode == 2 and len(lines) == 1 and "--where 'ctr>0.5'" in lines[0], bare.stderr
