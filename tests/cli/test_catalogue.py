"""The catalogue: what a user gets from the installed `regionmir` for every bad input we know of.

Every case runs the console script in a subprocess, as a user does, and asserts the exit code,
one `error:` line on stderr that names the file or option (and, for usage errors, points to
--help), no Python traceback, and no patient name, id or birth date anywhere in the output.
Ingest cases also assert the exact number of points stored afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers.catalogue import BOXED, CLI, SALT, assert_clean, assert_error, cli, points
from helpers.dicom_files import PATIENT, break_voi_lut, write_dicom

from regionmir.archive import Archive

# ----------------------------------------------------------------------------- usage errors

USAGE = {
    # id: (arguments, option or value the message must name)
    "missing file": (["search", "--anatomy", "left-lung", "{root}/no-such-file.dcm"], "no-such-file.dcm"),
    "directory as image": (["search", "--anatomy", "left-lung", "{root}"], "is a directory"),
    "top-k 0": (["search", "--anatomy", "left-lung", "--top-k", "0", "{image}"], "--top-k"),
    "top-k 100000": (["search", "--anatomy", "left-lung", "--top-k", "100000", "{image}"], "--top-k"),
    "box of three numbers": (["search", "--anatomy", "left-lung", "--box", "1,2,3", "{image}"], "--box"),
    "box with x2 < x1": (["search", "--anatomy", "left-lung", "--box", "300,50,100,400", "{image}"], "--box"),
    "shard 3/2": (["ingest", "{archive}", "--shard", "3/2"], "--shard"),
    "shard 1/0": (["ingest", "{archive}", "--shard", "1/0"], "--shard"),
    "shard text": (["ingest", "{archive}", "--shard", "half"], "--shard"),
    "unknown command": (["frobnicate"], "frobnicate"),
    "unknown option": (["search", "--anatomy", "left-lung", "--frob", "{image}"], "--frob"),
    "missing --anatomy": (["search", "{image}"], "--anatomy"),
    "ingest of a missing folder": (["ingest", "{root}/no-such-archive"], "no-such-archive"),
    "workers -1": (["ingest", "{archive}", "--workers", "-1"], "--workers"),
}


@pytest.mark.parametrize("case", list(USAGE), ids=list(USAGE))
def test_usage_errors_are_one_line_pointing_to_help(world, case):
    args, mention = USAGE[case]
    args = [a.format(root=world.root, image=world.image, archive=world.archive) for a in args]
    line = assert_error(world, cli(world, *args), 2, mention)
    assert "--help" in line


def test_unknown_anatomy_suggests_close_names(world):
    assert_error(world, cli(world, "search", "--anatomy", "left-lungg", str(world.image), "--model",
                            str(world.model)), 1, "left-lungg", "left-lung", "regionmir anatomies")


def test_no_arguments_shows_the_help(world):
    result = cli(world)
    assert result.returncode == 0 and "Usage" in result.stdout and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- store addresses


def test_a_port_out_of_range_is_named(world):
    for command in (["search", "--anatomy", "left-lung", str(world.image)], ["ingest", str(world.archive)]):
        result = cli(world, *command, "--model", str(world.model), "--qdrant-url", "http://127.0.0.1:99999")
        assert_error(world, result, 1, "99999", "--qdrant-url")


@pytest.fixture
def not_qdrant():
    """An HTTP server on a free loopback port that answers 404 to everything, as a web server would."""

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>not found</html>")

        do_PUT = do_POST = do_GET

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_is_not_qdrant_is_called_so(world, not_qdrant):
    for command in (["search", "--anatomy", "left-lung", str(world.image)], ["ingest", str(world.archive)]):
        result = cli(world, *command, "--model", str(world.model), "--qdrant-url", not_qdrant)
        line = assert_error(world, result, 1, not_qdrant, "not a Qdrant server", "6333")
        assert "collection None" not in line


def test_nothing_listening_is_said_plainly(world):
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"REGIONMIR_HOME": str(world.home)}
    result = cli(world, "info", "--qdrant-url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout, env
    assert f"127.0.0.1:{port}" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("command", [["info"], ["search", "--anatomy", "left-lung", "IMAGE"], ["ingest", "ARCHIVE"]])
def test_credentials_in_a_qdrant_url_are_never_shown(world, command):
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [{"IMAGE": str(world.image), "ARCHIVE": str(world.archive)}.get(a, a) for a in command]
    model = [] if command == ["info"] else ["--model", str(world.model)]
    result = cli(world, *args, *model, "--qdrant-url", f"http://admin:hunter2SECRET@127.0.0.1:{port}")
    assert_clean(world, result)
    line = result.stderr.splitlines()[-1]  # after the retries' warnings
    assert result.returncode == 1 and line.startswith("error: ") and f"http://***@127.0.0.1:{port}" in line
    assert "hunter2SECRET" not in result.stdout + result.stderr and "admin" not in line


def test_a_dicomweb_token_in_the_query_string_is_never_shown(world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli(world, "ingest", f"http://127.0.0.1:{port}/dicom-web?access_token=s3cr3t-TOKEN", "--json",
                 "--model", str(world.model))
    assert_error(world, result, 1, f"http://127.0.0.1:{port}/dicom-web?access_token=***")
    assert "s3cr3t-TOKEN" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [["search", "--anatomy", "left-lung", "IMAGE", "--montage"], ["localize", "IMAGE", "--preview"]])
@pytest.mark.parametrize("name", ["out.xyz", "out"])
def test_an_image_output_pillow_cannot_write_is_refused_first(world, tmp_path, command, name):
    """Once the search ran, then `--montage x.xyz` ended in a Pillow traceback."""
    args = [str(world.image) if a == "IMAGE" else a for a in command]
    result = cli(world, *args, str(tmp_path / name), "--model", str(world.model))
    assert_error(world, result, 2, name, "name it .png")


def test_a_home_with_an_unknown_user_is_one_line(world):
    result = subprocess.run([str(CLI), "info", "--json"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "REGIONMIR_HOME": "~nosuchuser-rmir/x", "QDRANT_URL": ""})
    assert_error(world, result, 1, "REGIONMIR_HOME='~nosuchuser-rmir/x'", "give a folder path")


def test_markup_in_a_file_name_is_shown_as_written(world, tmp_path):
    """Rich markup in user text once broke the error line (a traceback) or changed what it said."""
    odd = tmp_path / "x[red]y[bold].dcm"
    odd.write_text("not a DICOM\n")
    result = cli(world, "search", "--anatomy", "left-lung", str(odd), "--model", str(world.model))
    assert_error(world, result, 1, "x[red]y[bold].dcm", "not a DICOM file")


# ----------------------------------------------------------------------------- search and localize


@pytest.mark.parametrize("where, known", [("view=XX", "PA"), ("findings=notafinding", "nodule")])
def test_a_where_value_that_matches_nothing_lists_the_known_values(world, where, known):
    result = cli(world, "search", "--anatomy", "left-lung", str(world.image), "--model", str(world.model),
                 "--where", where)
    assert_error(world, result, 1, f"--where {where}", known)


def test_a_where_value_that_matches_gives_hits(world):
    result = cli(world, "search", "--anatomy", "left-lung", str(world.image), "--model", str(world.model),
                 "--where", "view=PA", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)["results"]
    assert hits and all(h["view"] == "PA" for h in hits)


def test_localize_json_masks_the_patient_folder(world):
    result = cli(world, "localize", str(world.image), "--model", str(world.model), "--json")
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    shown = json.loads(result.stdout)["image"]
    assert shown.endswith(world.image.name) and "/*/" in shown
    assert world.image.parent.parent.name not in shown  # p1XXXXXXX: the MIMIC subject id


# ----------------------------------------------------------------------------- bad DICOMs


def make_bad_files(folder: Path, good: Path) -> dict[str, str]:
    """Every bad DICOM kind we know in ``folder``: file name -> what its error must say."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) % 4096)
    data = good.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 3])
    (folder / "text.dcm").write_text("this is not a DICOM file\n" * 10)
    (folder / "empty.dcm").write_bytes(b"")
    sr = pydicom.dcmread(good)
    del sr.PixelData
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.Modality, sr.PatientName, sr.PatientID = "SR", PATIENT["PatientName"], PATIENT["PatientID"]
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    sr.save_as(folder / "sr.dcm")
    write_dicom(folder / "rgb.dcm", np.zeros((40, 48, 3), np.uint8), "RGB")
    write_dicom(folder / "multiframe.dcm", np.stack([ramp, ramp]), bits_stored=12)
    write_dicom(folder / "nopixels.dcm", ramp, bits_stored=12, PixelData=None)
    break_voi_lut(write_dicom(folder / "badlut.dcm", (ramp // 16).astype(np.uint8), bits_stored=8))
    write_dicom(folder / "nan.dcm", ramp, bits_stored=12, RescaleSlope="NaN", RescaleIntercept="0",
                WindowCenter="2000", WindowWidth="4000")  # every pixel NaN: once a poison pill
    frames = write_dicom(folder / "nframes.dcm", ramp, bits_stored=12, NumberOfFrames="1")
    raw = frames.read_bytes()
    at = raw.index(b"\x28\x00\x08\x00IS\x02\x00")  # (0028,0008) IS, 2 bytes: "1 " -> "a "
    frames.write_bytes(raw[:at + 8] + b"a " + raw[at + 10:])
    return {"truncated.dcm": "truncated", "text.dcm": "not a DICOM file", "empty.dcm": "empty",
            "sr.dcm": "not an image", "rgb.dcm": "RGB", "multiframe.dcm": "2 frames",
            "nopixels.dcm": "no pixel data", "badlut.dcm": "VOI LUT", "nan.dcm": "not a finite number",
            "nframes.dcm": "NumberOfFrames is not a whole number"}


@pytest.fixture(scope="module")
def bad_files(world):
    folder = world.root / "bad"
    return folder, make_bad_files(folder, world.image)


@pytest.mark.parametrize("name", ["truncated.dcm", "text.dcm", "empty.dcm", "sr.dcm", "rgb.dcm",
                                  "multiframe.dcm", "nopixels.dcm", "badlut.dcm", "nan.dcm", "nframes.dcm"])
def test_a_bad_query_file_is_named_with_its_reason(world, bad_files, name):
    folder, reasons = bad_files
    result = cli(world, "search", "--anatomy", "left-lung", str(folder / name), "--model", str(world.model))
    assert_error(world, result, 1, name, reasons[name])


@pytest.mark.parametrize("output", [["--json"], ["--preview", "preview.png"]])
def test_localize_of_a_nan_film_is_one_line_and_writes_nothing(world, bad_files, output, tmp_path):
    """Once `--json` printed bare NaN tokens (invalid JSON) and `--preview` a traceback."""
    folder, reasons = bad_files
    output = [str(tmp_path / o) if o.endswith(".png") else o for o in output]
    result = cli(world, "localize", str(folder / "nan.dcm"), "--model", str(world.model), *output)
    assert_error(world, result, 1, "nan.dcm", reasons["nan.dcm"])
    assert "NaN" not in result.stdout and not (tmp_path / "preview.png").exists()


def test_a_huge_film_is_searched(world):
    big = write_dicom(world.root / "big.dcm", np.full((8000, 8000), 2000, np.uint16) +
                 (np.arange(8000, dtype=np.uint16) % 512)[None, :], bits_stored=12)
    result = cli(world, "search", "--anatomy", "left-lung", str(big), "--model", str(world.model), "--json")
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    assert json.loads(result.stdout)["query"]["regions"][0]["source"] == "localizer"


def _copy_with(src: Path, dst: Path, new_uid: bool) -> Path:
    ds = pydicom.dcmread(src)
    if new_uid:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


def _scene_graph(archive: Path, src_id: str, new_id: str, move, keep_size: bool) -> int:
    """Write ``new_id``'s scene graph: ``src_id``'s with boxes moved by ``move``; usable boxes."""
    data = json.loads((archive / "scene_graph" / f"{src_id}_SceneGraph.json").read_text())
    data["image_id"] = new_id
    if not keep_size:  # as in real Chest ImaGenome files, which do not know the image size
        data.pop("image_width", None)
        data.pop("image_height", None)
    usable = 0
    for k, obj in enumerate(data["objects"]):
        moved = move(k, obj)
        usable += not moved
    (archive / "scene_graph" / f"{new_id}_SceneGraph.json").write_text(json.dumps(data))
    return usable


def test_ingest_of_a_messy_archive_stores_exactly_the_good_regions(world, tmp_path):
    """Bad files, a duplicate SOPInstanceUID, files found by content, boxes outside the image."""
    archive = tmp_path / "archive"
    shutil.copytree(world.archive, archive)
    paths = Archive(archive).dicom_paths()
    base = sum(len(Archive(archive).regions(p.stem)) for p in paths)
    _, reasons = bad_files = (None, make_bad_files(archive / "files" / "bad", paths[0]))
    del bad_files
    extra = archive / "files" / "xtra" / "SER1"  # sorts after files/p1*: the originals come first
    _copy_with(paths[0], extra / "IM000001", new_uid=False)  # same SOP as paths[0]: duplicate
    _copy_with(paths[1], extra / "IM000002.DCM", new_uid=True)  # every box outside: localizer
    _copy_with(paths[2], extra / "1.2.826.0.1.3680043.99", new_uid=True)  # one box negative size

    def outside(k, obj):
        obj.update(original_x1=5000, original_y1=5000, original_x2=5100, original_y2=5100)
        return True

    def one_negative(k, obj):
        if k == 0:
            obj.update(original_x2=obj["original_x1"] - 10)
            return True
        return False

    _scene_graph(archive, paths[1].stem, "IM000002", outside, keep_size=False)
    kept = _scene_graph(archive, paths[2].stem, "1.2.826.0.1.3680043.99", one_negative, keep_size=True)
    (archive / "files" / "xtra" / "README.txt").write_text("not a DICOM\n")
    (archive / "files" / "xtra" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")

    home, report = tmp_path / "home", tmp_path / "report.jsonl"
    result = cli(world, "ingest", str(archive), "--model", str(world.model), "--report", str(report),
                 "--json", home=home)
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    summary = json.loads(result.stdout)
    assert summary["failed"] == len(reasons) and summary["duplicates"] == 1 and summary["warnings"] == 2
    assert summary["ingested"] == len(paths) + 2
    assert points(world, home) == base + BOXED + kept

    records = [json.loads(x) for x in report.read_text().splitlines()]
    failed = {Path(r["path"]).name: r["reason"] for r in records if r["event"] == "failed"}
    assert set(failed) == set(reasons)
    for name, reason in reasons.items():
        assert reason in failed[name], (name, failed[name])
    (dup,) = [r for r in records if r["event"] == "duplicate"]
    assert dup["path"] == "files/xtra/SER1/IM000001" and dup["duplicate_of"].endswith(paths[0].name)
    warned = {r["image_id"]: r["reason"] for r in records if r["event"] == "warning"}
    assert "localizer" in warned["IM000002"] and "outside" in warned["IM000002"]
    assert "zero-area" in warned["1.2.826.0.1.3680043.99"]
    text = report.read_text()
    assert not [v for v in world.secrets if v in text]

    again = cli(world, "ingest", str(archive), "--model", str(world.model), "--json", home=home)
    assert json.loads(again.stdout)["ingested"] == 0 and points(world, home) == base + BOXED + kept


# ----------------------------------------------------------------------------- a read-only home


def _read_only(home: Path, *args: str) -> list[str]:
    """``args`` run with ``home`` mounted read-only (a private mount namespace; needs root)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(home), *args]


@pytest.fixture
def read_only_home(world, tmp_path):
    """A copy of ``world``'s home and a runner that sees it read-only, whatever our user."""
    home = tmp_path / "home"
    shutil.copytree(world.home, home)
    env = {**os.environ, "REGIONMIR_HOME": str(home), "REGIONMIR_SALT": SALT, "QDRANT_URL": ""}
    if os.geteuid() != 0:
        for p in [home, *home.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        yield lambda *a: subprocess.run([str(CLI), *a], env=env, capture_output=True, text=True, timeout=120)
        for p in [home, *home.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
        return
    if not shutil.which("unshare") or subprocess.run(_read_only(home, "true"), capture_output=True).returncode:
        pytest.skip("running as root without mount namespaces (unshare -m): cannot make a read-only home")
    yield lambda *a: subprocess.run(_read_only(home, str(CLI), *a), env=env, capture_output=True,
                                    text=True, timeout=120)


def test_a_read_only_home_is_named_not_called_corrupt(world, read_only_home):
    result = read_only_home("ingest", str(world.archive), "--model", str(world.model))
    assert_error(world, result, 1, "must be writable", "REGIONMIR_HOME")
    result = read_only_home("search", "--anatomy", "left-lung", str(world.image), "--model", str(world.model))
    assert_error(world, result, 1, "read-only", "REGIONMIR_HOME")
    result = read_only_home("doctor", "--model", str(world.model), "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["store"]["status"] == "FAIL" and "not writable" in checks["store"]["detail"]
    assert "backup" not in checks["store"]["fix"] and "intact" in checks["store"]["fix"]


# ----------------------------------------------------------------------------- a full disk

_FULL = ('mount -t tmpfs -o size=48m tmpfs "$0" && cp -r "$1" "$0/home" && '
         '{ dd if=/dev/zero of="$0/fill" bs=1M count=64 2>/dev/null; true; } && shift && '
         'REGIONMIR_HOME="$0/home" exec "$@"')


def test_a_full_disk_is_named_and_nothing_crashes(world, tmp_path):
    """The store's disk is full: the engine maps its files and would die of SIGBUS; every
    command says the disk is full instead, and doctor does not call the store damaged."""
    if os.geteuid() != 0 or not shutil.which("unshare") or \
            subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs root and mount namespaces (unshare -m) to mount a small full disk")
    mount = tmp_path / "disk"
    mount.mkdir()
    env = {**os.environ, "REGIONMIR_SALT": SALT, "QDRANT_URL": ""}

    def full(*args):
        cmd = ["unshare", "-m", "sh", "-c", _FULL, str(mount), str(world.home), str(CLI), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    for args in (["info"], ["search", "--anatomy", "left-lung", str(world.image), "--model", str(world.model)],
                 ["ingest", str(world.archive), "--model", str(world.model)]):
        assert_error(world, full(*args), 1, "free", "intact")
    result = full("doctor", "--model", str(world.model), "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["store"]["status"] == "FAIL" and "free" in checks["store"]["detail"]
    assert "backup" not in checks["store"]["fix"]
