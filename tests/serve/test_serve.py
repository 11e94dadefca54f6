"""`regionmir serve` against the in-process search: same ids and scores, the token, the caps, privacy."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pydicom
import pytest
from helpers.catalogue import CLI, assert_error, cli
from helpers.dicom_files import PATIENT
from helpers.orthanc import orthanc_missing, running_orthanc
from serve_helpers import CASES, start_server, stop_server

from regionmir.anatomy import Anatomy
from regionmir.archive import image_id_of
from regionmir.serve.client import search_params

pytestmark = pytest.mark.slow
SEEN: list[str] = []  # every answer body of this module: none may hold patient data


def call(url: str, route: str, params=None, body: bytes | None = None, token: str | None = None,
         content_type: str = "application/octet-stream") -> tuple[int, dict]:
    """``(status, JSON)`` of one request, errors included."""
    full = url + route + ("?" + urllib.parse.urlencode(params) if params else "")
    req = urllib.request.Request(full, data=body, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    SEEN.append(text)
    return status, json.loads(text)


def options(case: str) -> list[tuple[str, str]]:
    """A CASES entry as the API's query parameters."""
    args = CASES[case]
    pairs = [(k, v) for k, v in itertools.pairwise(args) if k.startswith("--") and not v.startswith("--")]
    opts = dict(pairs)
    where = [v for k, v in pairs if k == "--where"]
    return search_params(opts["--anatomy"], int(opts["--top-k"]), where, None, None, None, "--exact" in args)


def ranked(doc: dict) -> list[tuple]:
    """What must be identical: the query, and each hit's (or study's) id and score."""
    hits = doc.get("results") or [{**s["best"], "study": s["study_id"], "score": s["score"]} for s in doc["studies"]]
    return [doc["query"], [(h["id"], h["score"], h.get("study")) for h in hits]]


@pytest.mark.parametrize("case", ["all", "lung", "where"])
def test_an_upload_is_answered_as_the_in_process_search(world, reference, server, case):
    status, doc = call(server.url, "/api/search", [*options(case), ("filename", world.image.name)],
                       world.image.read_bytes())
    assert status == 200, doc
    assert ranked(doc) == ranked(reference[case])
    assert doc["query"]["in_collection"]  # the file's name found its stored boxes, as in-process
    assert not list(server.tmp.glob("regionmir-upload-*")), "an upload outlived its request"


@pytest.mark.parametrize("case", ["lung", "all"])
def test_a_stored_image_id_is_answered_as_its_file(world, reference, server, case):
    status, doc = call(server.url, f"/api/search/stored/{image_id_of(world.image)}", options(case), b"")
    assert status == 200, doc
    assert ranked(doc) == ranked(reference[case])


def test_search_through_a_running_server_prints_the_same_json(world, reference, server):
    done = cli(world, "search", *CASES["all"], "--json", str(world.image))  # found by the home's serve.json
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert ranked(doc) == ranked(reference["all"])
    assert doc.keys() == reference["all"].keys()
    assert doc["timings_s"].get("open_store") is None  # the server's document: no store was opened here
    forced = cli(world, "search", *CASES["lung"], "--json", "--server", server.url, str(world.image))
    assert forced.returncode == 0 and ranked(json.loads(forced.stdout)) == ranked(reference["lung"])


def test_a_bad_option_through_the_server_is_the_cli_s_usage_error(world, server):
    done = cli(world, "search", "--anatomy", "left-lung", "--where", "ctr>>1", str(world.image))
    assert done.returncode == 2 and "--where" in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = cli(world, "search", "--anatomy", "left-lung", "--montage", "m.png", str(world.image))
    assert done.returncode == 2 and "--montage" in done.stderr and "holds the store" in done.stderr, done.stderr


def test_health_anatomies_and_stored_regions(world, server):
    status, health = call(server.url, "/api/health")
    assert status == 200 and health["status"] == "ok" and health["collection"] == "regions"
    assert health["points"] > 0 and health["localizer"] is True
    status, vocab = call(server.url, "/api/anatomies")
    assert status == 200 and [a["slug"] for a in vocab] == [a.slug for a in Anatomy]
    assert sum(a["points"] for a in vocab) == health["points"]
    image_id = image_id_of(world.image)
    status, doc = call(server.url, f"/api/images/{image_id}/regions")
    assert status == 200 and "left-lung" in doc["regions"]
    assert all(r["image_id"] == image_id and "patient" not in r for r in doc["regions"].values())
    assert call(server.url, "/api/images/no-such-image/regions")[0] == 404
    assert call(server.url, "/api/no-such-route") == (404, {"error": "Not Found", "param": None})


@pytest.mark.parametrize("route", ["/api/images/{}/regions", "/api/search/stored/{}"])
def test_a_path_as_image_id_is_refused(server, route):
    for bad in ("../../etc/passwd", "..", "%2e%2e", "/etc/passwd"):
        path = route.format(urllib.parse.quote(bad, safe=""))
        method_body = b"" if "search" in path else None
        status, doc = call(server.url, path, [("anatomy", "left-lung")] if method_body is not None else None,
                           method_body)
        assert status == 404, (bad, doc)
        assert "root:" not in json.dumps(doc)


def test_an_image_id_never_reaches_the_filesystem():
    """The id check comes before any store or file access (a searcher that is touched would fail)."""
    from regionmir.serve.engine import Engine, NotFoundError

    engine = Engine.__new__(Engine)  # no store, no searcher: touching either raises AttributeError
    for bad in ("../../etc/passwd", "/etc/passwd", "a/b", ".hidden", ""):
        with pytest.raises(NotFoundError, match="not a path"):
            engine.regions(bad)
        with pytest.raises(NotFoundError, match="not a path"):
            engine.stored_file(bad)


def test_an_oversize_upload_is_refused_with_413(server):
    status, doc = call(server.url, "/api/search", [("anatomy", "left-lung")], b"\0" * (1 << 20 | 1))
    assert status == 413 and "1 MB" in doc["error"]
    assert not list(server.tmp.glob("regionmir-upload-*"))


def test_no_patient_data_in_any_answer(world, server, tmp_path):
    ds = pydicom.dcmread(world.image)
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    film = tmp_path / f"{PATIENT['PatientID']}.dcm"  # a name that is the patient's id, too
    ds.save_as(film)
    status, doc = call(server.url, "/api/search", [("anatomy", "left-lung"), ("filename", film.name)],
                       film.read_bytes())
    assert status == 200 and doc["results"], doc
    call(server.url, "/api/search", [("anatomy", "no-such-region"), ("filename", film.name)], film.read_bytes())
    call(server.url, "/api/search", [("anatomy", "left-lung"), ("filename", "Doe^Jane.dcm")], b"not a dicom")
    secrets = set(PATIENT.values()) | world.secrets
    leaked = [(v, text[:200]) for text in SEEN for v in secrets if v in text]
    assert SEEN and not leaked, leaked


def test_another_interface_needs_a_token(world):
    done = subprocess.run([str(CLI), "serve", "--host", "0.0.0.0", "--port", "0"], check=False, capture_output=True,
                          text=True, env={"REGIONMIR_HOME": str(world.copy), "PATH": "/usr/bin:/bin"}, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "--token" in lines[0], done.stderr
    assert not (world.copy / "serve.json").exists()


def test_a_token_server_refuses_a_missing_or_wrong_token(world, reference, monkeypatch):
    proc, url = start_server(world.copy, world.root / "token-tmp", "--token", "s3cret-token", "--json")
    try:
        assert json.loads(proc.stdout.readline())["url"] == url  # --json: the address, for scripts
        assert call(url, "/api/health")[0] == 401
        assert call(url, "/api/health", token="wrong")[0] == 401
        assert call(url, "/api/search", [("anatomy", "left-lung")], world.image.read_bytes(), token="s3")[0] == 401
        assert call(url, "/api/health", token="s3cret-token")[0] == 200
        home = world.copy
        denied = cli(world, "search", *CASES["lung"], "--json", str(world.image), home=home)
        assert denied.returncode == 1 and "REGIONMIR_SERVE_TOKEN" in denied.stderr, denied.stderr
        monkeypatch.setenv("REGIONMIR_SERVE_TOKEN", "s3cret-token")
        done = cli(world, "search", *CASES["lung"], "--json", str(world.image), home=home)
        assert done.returncode == 0 and ranked(json.loads(done.stdout)) == ranked(reference["lung"]), done.stderr
        monkeypatch.setenv("REGIONMIR_SERVE_TOKEN", "wrong")
        forced = cli(world, "search", *CASES["lung"], "--server", url, str(world.image), home=home)
        assert forced.returncode == 1 and "REGIONMIR_SERVE_TOKEN" in forced.stderr, forced.stderr
    finally:
        err = stop_server(proc, signal.SIGTERM)  # `kill` cleans up as Ctrl-C does
    assert proc.returncode == 0 and not (home / "serve.json").exists(), err


def test_a_dead_server_s_file_is_ignored(world, reference, tmp_path):
    """A server killed without cleaning up: `search` finds its pid dead and searches in-process."""
    home = world.copy
    (home / "serve.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": 2**22 + 12345,
                                                "host": __import__("socket").gethostname(),
                                                "token_sha256": None, "collection": "regions"}))
    try:
        done = cli(world, "search", *CASES["lung"], "--json", str(world.image), home=home)
        assert done.returncode == 0, done.stderr
        assert ranked(json.loads(done.stdout)) == ranked(reference["lung"])
    finally:
        (home / "serve.json").unlink()


def test_search_forced_to_a_server_that_is_not_there_says_so(world):
    done = cli(world, "search", "--anatomy", "left-lung", "--server", "http://127.0.0.1:9", str(world.image))
    assert done.returncode == 1 and "no RegionMIR server answers" in done.stderr, done.stderr


def test_import_of_the_cli_stays_light():
    code = "import sys, regionmir.cli.app, regionmir.serve.client; print(any(m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette') for m in sys.modules))"
    out = subprocess.run([str(Path(CLI).parent / "python"), "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_a_pacs_url_is_answered_as_the_cli_s_url_search(world, server, tmp_path):
    """The server retrieves a WADO-RS URL as `regionmir search URL` does (a real Orthanc on loopback)."""
    why = orthanc_missing()
    if why:
        pytest.skip(why)
    with running_orthanc(tmp_path / "orthanc") as pacs:
        pacs.upload(world.image)
        ds = pydicom.dcmread(world.image, stop_before_pixels=True)
        url = (f"{pacs.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}")
        local = cli(world, "search", *CASES["lung"], "--no-server", "--json", url, home=world.copy)
        assert local.returncode == 0, local.stderr
        status, doc = call(server.url, "/api/search/url", options("lung"), json.dumps({"url": url}).encode(),
                           content_type="application/json")
        assert status == 200, doc
        assert ranked(doc) == ranked(json.loads(local.stdout))
        via = cli(world, "search", *CASES["lung"], "--json", url)  # the CLI sends the URL, the server fetches it
        assert via.returncode == 0 and ranked(json.loads(via.stdout)) == ranked(json.loads(local.stdout))


def test_a_second_server_on_a_held_store_is_refused_in_one_line(world, server):
    done = cli(world, "serve", "--port", "0", timeout=120)
    assert_error(world, done, 1, "already serves", server.url)
    assert json.loads((world.home / "serve.json").read_text())["pid"] == server.proc.pid  # the first one's
