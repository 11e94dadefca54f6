"""`regionmir ingest URL` and `regionmir search URL` against a real Orthanc (DICOMweb plugin) on loopback.

The same phantom files are ingested from their folder and from Orthanc: the points must be the
same (ids, vectors, payloads but for the documented source fields). Orthanc asks for HTTP basic
credentials, which come from the environment and must never reach output, payloads or reports.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pydicom
import pytest
import requests
from helpers.ingest import kill_when_ledger_has
from helpers.orthanc import free_port, orthanc_missing, running_orthanc
from helpers.pacs import (
    AET,
    CLI,
    Listen,
    assert_same_as_folder,
    bad_instances,
    bare_copy,
    env_for,
    model_with_localizer,
    probe_scores,
    store_points,
)

from regionmir.archive import Archive
from regionmir.errors import PacsError
from regionmir.pacs.dicomweb import InstanceRef, check_url, parse_instance_url, session

USER, PASSWORD = "radiology", "s3cret-Pa55word"


# ----------------------------------------------------------------------------- without Orthanc


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(PacsError, match="REGIONMIR_DICOMWEB_USER") as e:
        check_url(f"https://{USER}:{PASSWORD}@pacs.example:443/dicom-web")
    assert PASSWORD not in str(e.value)
    with pytest.raises(PacsError, match="not a DICOMweb address"):
        check_url("ftp://pacs.example/dicom-web")


def test_session_takes_token_or_basic_credentials_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REGIONMIR_DICOMWEB_TOKEN", "tok-123")
    assert session().headers["Authorization"] == "Bearer tok-123"
    monkeypatch.delenv("REGIONMIR_DICOMWEB_TOKEN")
    monkeypatch.setenv("REGIONMIR_DICOMWEB_USER", USER)
    monkeypatch.setenv("REGIONMIR_DICOMWEB_PASSWORD", PASSWORD)
    s = session()
    assert s.auth == (USER, PASSWORD) and "Authorization" not in s.headers
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("REGIONMIR_DICOMWEB_CA", str(tmp_path / "ca.pem"))
    assert session().verify == str(tmp_path / "ca.pem")  # requests checks the server against it
    monkeypatch.setenv("REGIONMIR_DICOMWEB_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(PacsError, match="PEM CA bundle"):
        session()


def test_instance_urls_parse_into_root_and_uids():
    root, ref = parse_instance_url("http://h:8042/dicom-web/studies/1.2/series/1.2.3/instances/1.2.3.4/")
    assert root == "http://h:8042/dicom-web" and ref == InstanceRef("1.2", "1.2.3", "1.2.3.4")
    assert ref.path == "studies/1.2/series/1.2.3/instances/1.2.3.4"
    with pytest.raises(PacsError, match="instance URL"):
        parse_instance_url("http://h:8042/dicom-web/studies/1.2/series/1.2.3")
    with pytest.raises(PacsError, match="instance URL"):
        parse_instance_url("http://h/dicom-web/studies/1.2/series/../instances/1.2.3.4")


def test_narrowing_options_are_checked_before_any_request(monkeypatch, tmp_path):
    from regionmir.errors import RegionMIRError
    from regionmir.pacs.source import dicomweb_source

    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path))
    url = "http://127.0.0.1:9/dicom-web"  # nothing listens there: no request may be made
    with pytest.raises(RegionMIRError, match="--since takes a date YYYY-MM-DD"):
        dicomweb_source(url, since="02/12/2026")
    with pytest.raises(RegionMIRError, match="--modality takes CR or DX"):
        dicomweb_source(url, modalities=["MR"])
    with pytest.raises(RegionMIRError, match="--study takes a StudyInstanceUID"):
        dicomweb_source(url, study="1.2.3; DROP")
    source = dicomweb_source(url, since="2026-01-31", modalities=["dx"], study="1.2.3")
    assert (source.query.modalities, str(source.query.since), source.query.study) == (("DX",), "2026-01-31", "1.2.3")
    assert source.annotations == source.spool.root and source.annotations.is_relative_to(tmp_path / "spool")
    assert source.archive_root is None  # payload paths are WADO-RS paths
    with pytest.raises(PacsError, match="cannot reach it"):
        source.plan((0, 1), ledger=None)  # the search fails before the ledger is asked


def test_pacs_options_on_a_folder_and_missing_paths_are_one_line_errors(tmp_path):
    cases = {  # usage errors exit 2, a bad URL (found by the library) exits 1
        ("ingest", str(tmp_path), "--since", "2026-01-01"): (2, "apply to a DICOMweb URL only"),
        ("ingest", str(tmp_path / "gone")): (2, "is not a folder"),
        ("search", "--anatomy", "left-lung", str(tmp_path / "gone.dcm")): (2, "WADO-RS instance URL"),
        ("search", "--anatomy", "left-lung", "http://h/dicom-web/studies/1.2"): (1, "not a WADO-RS instance URL"),
    }
    for args, (code, message) in cases.items():
        r = subprocess.run([CLI, *args], env=env_for(tmp_path / "home"), capture_output=True, text=True, timeout=60)
        assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- with Orthanc

@pytest.fixture(scope="module")
def pacs(tiny_archive, tiny_model, tiny_localizer, tmp_path_factory):
    """Orthanc with the phantom files and three bad DX instances; a model with a localizer; the
    folder ingest of the same files (boxes from the localizer in both)."""
    if orthanc_missing():
        pytest.skip(orthanc_missing())
    tmp = tmp_path_factory.mktemp("pacs")
    model = model_with_localizer(tiny_model, tiny_localizer, tmp / "model")
    folder = bare_copy(tiny_archive, tmp / "folder")
    bad = bad_instances(tiny_archive, tmp / "bad")
    home = tmp / "home-folder"
    r = subprocess.run([CLI, "ingest", str(folder), "--model", str(model), "--json", "--workers", "0"],
                       env=env_for(home), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with running_orthanc(tmp / "orthanc", auth=(USER, PASSWORD)) as orthanc:
        good = [orthanc.upload(path)["ID"] for path in Archive(folder).dicom_paths()]
        for path in bad.values():
            orthanc.upload(path)
        yield {"orthanc": orthanc, "good_ids": good, "model": model, "folder": folder, "folder_home": home, "bad": bad, "tmp": tmp}


def ingest_url(pacs, home: Path, *extra: str, credentials: bool = True) -> subprocess.CompletedProcess:
    env = env_for(home)
    if credentials:
        env.update(REGIONMIR_DICOMWEB_USER=USER, REGIONMIR_DICOMWEB_PASSWORD=PASSWORD)
    cmd = [CLI, "ingest", pacs["orthanc"].dicomweb, "--model", str(pacs["model"]), "--json", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_dicomweb_ingest_equals_the_folder_ingest(pacs, tmp_path):
    home = tmp_path / "home"
    r = ingest_url(pacs, home, "--workers", "1", "--report", str(tmp_path / "report.jsonl"))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    n = len(Archive(pacs["folder"]).dicom_paths())
    assert (summary["ingested"], summary["failed"], summary["images"]) == (n, len(pacs["bad"]), n + len(pacs["bad"]))
    folder_points, pacs_points = store_points(pacs["folder_home"]), store_points(home)
    assert_same_as_folder(folder_points, pacs_points)
    assert _close(probe_scores(home), probe_scores(pacs["folder_home"]))  # same vectors
    assert not list((home / "spool").rglob("*.dcm"))  # the fetched files are gone


def _close(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(x == pytest.approx(y, abs=1e-5) for k in a for x, y in zip(a[k], b[k]))


def test_scene_graphs_named_by_sop_uid_give_the_annotated_boxes(pacs, tiny_archive, tmp_path):
    a = Archive(tiny_archive)
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    for path in a.dicom_paths():
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        shutil.copy(a.scene_graph_path(path.stem), graphs / f"{sop}_SceneGraph.json")
    folder_home, home = tmp_path / "folder", tmp_path / "pacs"
    r = subprocess.run([CLI, "ingest", str(tiny_archive), "--model", str(pacs["model"]), "--json", "--workers", "0"],
                       env=env_for(folder_home), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ingest_url(pacs, home, "--scene-graphs", str(graphs), "--workers", "0").returncode == 0
    folder, web = store_points(folder_home), store_points(home)
    assert set(web) == set(folder) and len(folder) > 29 * len(a.dicom_paths())  # all 36 regions, not the localizer's 29
    for pid, p in web.items():  # the scene graph gives the study id too: only image_id and path differ
        assert {k: v for k, v in p.items() if k not in ("image_id", "path")} == \
            {k: v for k, v in folder[pid].items() if k not in ("image_id", "path")}
        assert p["box_source"] == "annotation" and p["image_id"] == p["sop_uid"]


def test_bad_instances_are_reported_not_fatal_and_nothing_leaks(pacs, tmp_path):
    home, report = tmp_path / "home", tmp_path / "report.jsonl"
    r = ingest_url(pacs, home, "--workers", "0", "--report", str(report))
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in report.read_text().splitlines()]
    failed = {x["image_id"]: x["reason"] for x in records if x["event"] == "failed"}
    sops = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: k for p, k in
            ((p, k) for k, p in pacs["bad"].items())}
    assert set(failed) == set(sops)
    assert "not an image" in failed[next(s for s, k in sops.items() if k == "sr")]
    everything = r.stdout + r.stderr + report.read_text() + json.dumps(store_points(home))
    assert PASSWORD not in everything and USER not in everything
    names = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientName) for p in Archive(pacs["folder"]).dicom_paths()}
    assert not [x for x in names if x in everything]


def test_rerun_resumes_and_narrowing_options_take_their_part(pacs, tmp_path):
    home = tmp_path / "home"
    paths = Archive(pacs["folder"]).dicom_paths()
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    study = headers[0].StudyInstanceUID
    in_study = sum(h.StudyInstanceUID == study for h in headers)
    first = json.loads(ingest_url(pacs, home, "--study", study, "--workers", "0").stdout)
    assert first["ingested"] == in_study and first["failed"] == 0
    dx = sum(h.Modality == "DX" for h in headers)
    assert 0 < dx < len(paths)
    second = json.loads(ingest_url(pacs, home, "--modality", "DX", "--workers", "0").stdout)
    dx_done_before = sum(h.Modality == "DX" and h.StudyInstanceUID == study for h in headers)
    assert second["skipped"] == dx_done_before and second["ingested"] == dx - dx_done_before
    assert json.loads(ingest_url(pacs, home, "--since", "2999-01-01").stdout)["images"] == 0
    last = json.loads(ingest_url(pacs, home, "--workers", "0").stdout)
    done_before = first["ingested"] + second["ingested"]
    assert (last["skipped"], last["ingested"], last["failed"]) == (done_before, len(paths) - done_before, len(pacs["bad"]))
    assert json.loads(ingest_url(pacs, home, "--workers", "0").stdout)["skipped"] == len(paths)
    assert set(store_points(home)) == set(store_points(pacs["folder_home"]))


def test_kill_9_mid_run_then_rerun_gives_the_clean_result(pacs, tmp_path):
    home = tmp_path / "home"
    env = {**env_for(home), "REGIONMIR_DICOMWEB_USER": USER, "REGIONMIR_DICOMWEB_PASSWORD": PASSWORD}
    cmd = [CLI, "ingest", pacs["orthanc"].dicomweb, "--model", str(pacs["model"]), "--json"]
    proc = subprocess.Popen([*cmd, "--batch-size", "1", "--workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n_done = kill_when_ledger_has(proc, home, 2, timeout=120)
    total = len(Archive(pacs["folder"]).dicom_paths())
    assert proc.returncode == -signal.SIGKILL and 2 <= n_done < total, "the kill did not land mid-run"
    r = subprocess.run([*cmd, "--workers", "0"], env=env, capture_output=True, text=True, timeout=120)
    summary = json.loads(r.stdout)
    assert summary["skipped"] >= n_done and summary["ingested"] == total - summary["skipped"]
    assert_same_as_folder(store_points(pacs["folder_home"]), store_points(home))
    assert not list((home / "spool").rglob("*.dcm"))  # the killed run's fetched files were cleared


def test_wrong_or_missing_credentials_give_one_line_and_no_password(pacs, tmp_path):
    r = ingest_url(pacs, tmp_path / "home", credentials=False)
    assert r.returncode == 1 and "REGIONMIR_DICOMWEB_USER" in r.stderr and "Traceback" not in r.stderr
    url = pacs["orthanc"].dicomweb.replace("http://", f"http://{USER}:{PASSWORD}@")
    r = subprocess.run([CLI, "ingest", url, "--model", str(pacs["model"])], env=env_for(tmp_path / "h2"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and PASSWORD not in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_search_by_wado_rs_url_finds_the_query_in_the_collection(pacs, tmp_path):
    home = tmp_path / "home"
    assert ingest_url(pacs, home, "--workers", "0").returncode == 0
    query = Archive(pacs["folder"]).dicom_paths()[0]
    ds = pydicom.dcmread(query, stop_before_pixels=True)
    url = (f"{pacs['orthanc'].dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    env = {**env_for(home), "REGIONMIR_DICOMWEB_USER": USER, "REGIONMIR_DICOMWEB_PASSWORD": PASSWORD}
    cmd = [CLI, "search", "--anatomy", "left-lung", url, "--model", str(pacs["model"]), "--json", "--top-k", "5"]
    r = subprocess.run([*cmd, "--montage", str(tmp_path / "m.png")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.png").stat().st_size > 0 and "montage:" not in r.stderr  # hits fetched from the PACS
    doc = json.loads(r.stdout)
    assert doc["query"]["image_id"] == ds.SOPInstanceUID and doc["query"]["in_collection"] is True
    assert doc["query"]["regions"][0]["source"] == "archive"  # its own stored box, found by SOP UID
    assert len(doc["results"]) == 5 and all(h["image_id"] != ds.SOPInstanceUID for h in doc["results"])
    # the same query from the file gives the same hits (its file stem is not the SOP UID, so it
    # is not recognised as in the collection: give it the same box, and exclude its patient)
    box = ",".join(str(v) for v in doc["query"]["regions"][0]["box"])
    r2 = subprocess.run([*cmd[:4], str(query), *cmd[5:], "--box", box, "--exclude-same-patient"],
                        env=env_for(home), capture_output=True, text=True, timeout=60)
    assert r2.returncode == 0, r2.stderr
    assert [h["id"] for h in json.loads(r2.stdout)["results"]] == [h["id"] for h in doc["results"]]


def test_orthanc_pushing_to_listen_gives_the_folder_points(pacs, tmp_path):
    """A real PACS as the C-STORE client: Orthanc (DCMTK) sends the images to `regionmir listen`."""
    o, home, port = pacs["orthanc"], tmp_path / "home", free_port()
    listen = Listen(home, pacs["model"], port)
    try:
        r = requests.put(f"{o.url}/modalities/regionmir", auth=o.auth, timeout=10,
                         json={"AET": AET, "Host": "127.0.0.1", "Port": port})
        r.raise_for_status()
        r = requests.post(f"{o.url}/modalities/regionmir/store", auth=o.auth, timeout=120, json=pacs["good_ids"])
        assert r.ok, r.text
        listen.wait_ingested(len(pacs["good_ids"]))
    finally:
        err = listen.stop()
    assert listen.proc.returncode == 0, err
    assert_same_as_folder(store_points(pacs["folder_home"]), store_points(home))


def test_orthanc_answers_qido_for_the_uploaded_files(pacs):
    """The fixture's premise: Orthanc has the phantom files plus the bad instances, and asks for credentials."""
    o = pacs["orthanc"]
    assert requests.get(f"{o.dicomweb}/instances", timeout=10).status_code == 401
    found = requests.get(f"{o.dicomweb}/instances", auth=o.auth, timeout=10).json()
    assert len(found) == len(Archive(pacs["folder"]).dicom_paths()) + len(pacs["bad"])


def test_dicomweb_over_tls_with_a_private_ca(pacs, tmp_path):
    """The PACS behind https with a self-signed certificate: refused without its CA (one line,
    no password), and with REGIONMIR_DICOMWEB_CA the same points as the folder ingest."""
    from helpers.tls_proxy import openssl_missing, tls_front

    if openssl_missing():
        pytest.skip(openssl_missing())
    with tls_front(pacs["orthanc"].url, tmp_path / "tls") as (base, ca):
        url = base + pacs["orthanc"].dicomweb[len(pacs["orthanc"].url):]
        assert url.startswith("https://") and url.endswith("/dicom-web")
        env = {**env_for(tmp_path / "home"), "REGIONMIR_DICOMWEB_USER": USER, "REGIONMIR_DICOMWEB_PASSWORD": PASSWORD}
        cmd = [CLI, "ingest", url, "--model", str(pacs["model"]), "--json", "--workers", "0"]
        refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        lines = [x for x in refused.stderr.splitlines() if x.strip()]
        assert refused.returncode == 1 and len(lines) == 1 and "REGIONMIR_DICOMWEB_CA" in lines[0], refused.stderr
        assert PASSWORD not in refused.stderr + refused.stdout and "Traceback" not in refused.stderr
        done = subprocess.run(cmd, env={**env, "REGIONMIR_DICOMWEB_CA": str(ca)}, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    n = len(Archive(pacs["folder"]).dicom_paths())
    assert json.loads(done.stdout)["ingested"] == n
    assert_same_as_folder(store_points(pacs["folder_home"]), store_points(tmp_path / "home"))


class _Qido:
    """A QIDO-RS server with ``series`` CR series (one study each) that pages as the standard says:
    ``limit`` results from ``offset`` on, an empty answer past the end, and at most ``cap`` per
    answer (fewer than asked for, as servers bound their pages). ``ignore_offset`` injects a
    fault: the first page again for every offset. Series ``1.2.k.1`` holds ``instances(k)``
    instances."""

    def __init__(self, series: int, cap: int, ignore_offset: bool = False, instances=lambda k: 3):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        qido, self.limits = self, []  # the limit each request asked for

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                offset = 0 if ignore_offset else int(query.get("offset", ["0"])[0])
                limit = int(query.get("limit", [str(cap)])[0])
                qido.limits.append(limit)
                if url.path.endswith("/instances"):
                    se = url.path.split("/")[-2]
                    n = instances(int(se.split(".")[2]))
                    items = [{"00080018": {"vr": "UI", "Value": [f"{se}.{k}"]}} for k in range(1, n + 1)]
                else:  # the CR search finds them all, the DX search none
                    cr = "Modality=CR" in url.query
                    items = [{"0020000D": {"vr": "UI", "Value": [f"1.2.{k}"]},
                              "0020000E": {"vr": "UI", "Value": [f"1.2.{k}.1"]}} for k in range(1, series + 1) if cr]
                body = json.dumps(items[offset:offset + min(limit, cap)]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def requests(self) -> int:
        return len(self.limits)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("ignore_offset", [False, True], ids=["short-pages", "ignores-offset"])
def test_qido_paging_takes_every_page_and_always_ends(ignore_offset):
    """Some servers send fewer results per page than asked for (page on until an empty one); one
    that ignores ``offset`` sent its first page forever (13,562 requests in 20 s): it must end."""
    from regionmir.pacs.dicomweb import Query, connect, find_instances

    qido = _Qido(series=5, cap=2, ignore_offset=ignore_offset)
    try:
        refs = find_instances(connect(qido.url), Query())
    finally:
        qido.close()
    # all of it; from a server that ignores offset, what its first pages show (2 series, 2 instances each)
    series, per_series = (2, 2) if ignore_offset else (5, 3)
    assert {(r.study_uid, r.series_uid) for r in refs} == {(f"1.2.{k}", f"1.2.{k}.1") for k in range(1, series + 1)}
    assert len(refs) == series * per_series
    assert qido.requests < 40


@pytest.mark.parametrize("url", ["http://s3cr3t-TOKEN@pacs.example:8042/dicom-web",
                                 "https://:s3cr3t-TOKEN@pacs.example/dicom-web",
                                 "https://radiology:s3cr3t-TOKEN@pacs.example/dicom-web"],
                         ids=["bare-token", "token-as-password", "user-and-password"])
def test_any_credential_in_the_url_userinfo_is_refused(url):
    """A bare token (``http://TOKEN@host``) is as secret as a password: refused, never echoed."""
    with pytest.raises(PacsError, match="REGIONMIR_DICOMWEB_TOKEN") as e:
        check_url(url)
    assert "s3cr3t-TOKEN" not in str(e.value)


def test_qido_takes_every_page_of_a_server_that_pages_properly():
    """More series, and more instances in one series, than one page holds: every one is found
    (reading the first page only found 500 of each)."""
    from regionmir.pacs.dicomweb import QIDO_PAGE, Query, connect, find_instances

    series, big = QIDO_PAGE + 3, 2 * QIDO_PAGE + 7
    qido = _Qido(series, cap=1000, instances=lambda k: big if k == 1 else 1)
    try:
        refs = find_instances(connect(qido.url), Query())
    finally:
        qido.close()
    assert len({(r.study_uid, r.series_uid) for r in refs}) == series
    assert len(refs) == len(set(refs)) == big + series - 1
    assert {f"1.2.1.1.{k}" for k in range(1, big + 1)} <= {r.sop_uid for r in refs}
    assert set(qido.limits) == {QIDO_PAGE}  # we ask for pages, not for everything at once


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_regionmir_dicomweb_ca_wins_over_a_system_ca_bundle(monkeypatch, tmp_path, variable):
    """Hospital machines set REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE to the system bundle; plain
    requests lets it replace the session's own, which silently ignored REGIONMIR_DICOMWEB_CA."""
    import certifi
    from helpers.tls_proxy import openssl_missing, tls_front

    from regionmir.pacs.dicomweb import Query, connect, find_instances

    if openssl_missing():
        pytest.skip(openssl_missing())
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "REGIONMIR_DICOMWEB_CA", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, certifi.where())  # a valid bundle without our private root
    qido = _Qido(series=2, cap=1000, instances=lambda k: 2 if k == 1 else 1)
    try:
        with tls_front(qido.base, tmp_path / "tls") as (base, ca):
            with pytest.raises(PacsError, match="REGIONMIR_DICOMWEB_CA"):  # the premise: the bundle is in play
                find_instances(connect(f"{base}/dicom-web"), Query())
            monkeypatch.setenv("REGIONMIR_DICOMWEB_CA", str(ca))
            refs = find_instances(connect(f"{base}/dicom-web"), Query())
    finally:
        qido.close()
    assert len(refs) == 3
