"""The catalogue of `regionmir ingest`: archive layouts that name the patient, a killed ingest whose
parent reads its pipes, reports that cannot be written, dangling links, a broken localizer, markup in
a home's name.

Each case runs the installed console script, as a user does, and asserts what the user gets: the
exit code, one `error:` line where something is wrong, no traceback, no patient data anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pydicom
import pytest
from helpers.catalogue import CLI, SALT, assert_clean, assert_error, cli, points
from helpers.ingest import kill_when_ledger_has, processes_with_env

from regionmir.store import open_store

# ----------------------------------------------------------------------------- archive layouts

# (path in the archive, PatientName, PatientID, PatientBirthDate): the probe's hospital exports
LAYOUTS = [
    ("DOE^JOHN_19450101/STUDY1/IM000001", "DOE^JOHN", "PID4455", "19450101"),
    ("Smith John 1950-03-04/12345678.dcm", "SMITH^JOHN", "12345678", "19500304"),  # file named by its id
    ("A12stuff/A12.dcm", "ROE^RICHARD", "A12", "19600101"),  # a short id, also inside a folder name
    ("scans/PAT9876_chest/film.dcm", "POE^EDGAR", "PAT9876", "19700202"),  # an id inside a folder name
]
# every way the values above may be written in a name: what must appear nowhere
SECRETS = ["DOE", "JOHN", "PID4455", "19450101", "Smith", "SMITH", "12345678", "1950-03-04", "19500304",
           "A12", "ROE", "RICHARD", "19600101", "PAT9876", "POE", "EDGAR", "19700202"]


def _export(src: Path, root: Path) -> Path:
    """An archive in the layouts of :data:`LAYOUTS`: copies of ``src`` with those patient values and
    fresh UIDs, no annotations (the localizer places the boxes)."""
    for rel, name, pid, birth in LAYOUTS:
        ds = pydicom.dcmread(src)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, pid, birth
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(root / rel)
    return root


def payloads(home: Path, collection: str = "regions") -> list[dict]:
    """Every payload of ``collection`` in the embedded store of ``home`` (the store's `points` verb)."""
    store = open_store(path=home / "store")
    try:
        return [p.payload for p in store.points(collection, limit=100_000)]
    finally:
        store.close()


def leaks(text: str) -> list[str]:
    """The patient values of :data:`SECRETS` found in ``text``; names also in any case."""
    folded = text.casefold()
    return [s for s in SECRETS if s in text or (s.isalpha() and len(s) > 3 and s.casefold() in folded)]


@pytest.mark.parametrize("hashed", [False, True], ids=["masked", "hash-paths"])
def test_no_patient_value_is_stored_shown_or_ledgered_in_any_layout(world, tmp_path, hashed):
    """Folders and files named by the patient's name, birth date or id (whole, or inside a longer
    name): no payload, ledger line, report or output shows any of them; a query still finds its
    own stored regions (search hashes its name the same way)."""
    archive, home = _export(world.image, tmp_path / "export"), tmp_path / "home"
    extra = ["--hash-paths"] if hashed else []
    result = cli(world, "ingest", str(archive), "--model", str(world.model), "--workers", "0", "--json",
                 *extra, home=home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ingested"] == len(LAYOUTS)
    stored = payloads(home)
    ids, paths = {p["image_id"] for p in stored}, {p["path"] for p in stored}
    if hashed:
        assert all(i.startswith("img-") for i in ids) and all(p.startswith("path-") for p in paths)
    else:
        assert "IM000001" in ids and paths == {"*/STUDY1/IM000001", "*/*.dcm", "scans/*/film.dcm"}
    assert len(ids) == len(LAYOUTS)  # still one id per image
    shown = json.dumps(stored) + result.stdout + result.stderr
    shown += "".join(p.read_text() for p in (home / "ledgers").glob("*.done"))
    shown += "".join(p.read_text() for p in (home / "reports").glob("*.jsonl"))
    assert not leaks(shown), leaks(shown)

    query = archive / LAYOUTS[1][0]
    found = cli(world, "search", "-a", "left-lung", str(query), "--model", str(world.model), "--json", home=home)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["query"]["in_collection"] is True
    assert not leaks(found.stdout + found.stderr)


def test_hash_paths_is_refused_for_a_collection_of_plain_paths(world):
    result = cli(world, "ingest", str(world.archive), "--model", str(world.model), "--hash-paths")
    assert_error(world, result, 1, "--hash-paths", "--collection")


# ----------------------------------------------------------------------------- a killed ingest


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the helper processes")
def test_kill_9_under_a_parent_reading_the_pipes_leaves_nothing_behind(world, tmp_path):
    """A supervisor reads the ingest's stdout and stderr to the end before it waits
    (``communicate()``, ``subprocess.run(capture_output=True)``). The ingest is killed with
    SIGKILL and stays a zombie until then: its workers, fork server and resource tracker must
    end anyway and let go of the pipes, or the supervisor waits forever."""
    home = tmp_path / "home"
    env = {**os.environ, "REGIONMIR_HOME": str(home), "REGIONMIR_SALT": SALT, "QDRANT_URL": ""}
    cmd = [str(CLI), "ingest", str(world.archive), "--model", str(world.model), "--json", "--workers", "2",
           "--batch-size", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        n_done = kill_when_ledger_has(proc, home, 2, reap=False)
        assert n_done >= 2, "the kill did not land mid-run"
        left = processes_with_env("REGIONMIR_HOME", str(home), wait_s=15)  # the zombie itself is not counted
        assert not left, f"processes of the killed ingest still alive: {left}"
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.returncode is None:  # the test failed: let nothing of it outlive the session
            for pid in [int(x.split(":")[0]) for x in processes_with_env("REGIONMIR_HOME", str(home), 0)]:
                os.kill(pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------------------- reports, links, models


def test_a_report_that_cannot_be_written_is_one_line_after_the_points_are_stored(world, tmp_path):
    home = tmp_path / "home"
    result = cli(world, "ingest", str(world.archive), "--model", str(world.model), "--workers", "0",
                 "--report", "/dev/full", "--json", home=home)
    assert_error(world, result, 1, "/dev/full", "stored", "No space left on device", "--report")
    assert points(world, home) == points(world)  # every point is there
    again = cli(world, "ingest", str(world.archive), "--model", str(world.model), "--json", home=home)
    assert json.loads(again.stdout)["ingested"] == 0  # and ledgered


def test_a_dangling_dcm_link_is_reported_as_failed(world, tmp_path):
    archive, home, report = tmp_path / "archive", tmp_path / "home", tmp_path / "r.jsonl"
    archive.mkdir()
    shutil.copy(world.image, archive / "film.dcm")
    (archive / "gone.dcm").symlink_to(tmp_path / "moved-away" / "p10000032.dcm")
    (archive / "notes").symlink_to(tmp_path / "moved-away" / "notes")  # no DICOM name: not one
    result = cli(world, "ingest", str(archive), "--model", str(world.model), "--workers", "0",
                 "--report", str(report), "--json", home=home)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["images"], summary["ingested"], summary["failed"]) == (2, 1, 1)
    (failed,) = [r for r in map(json.loads, report.read_text().splitlines()) if r["event"] == "failed"]
    assert failed["path"] == "gone.dcm" and "symbolic link" in failed["reason"]
    assert "p10000032" not in report.read_text()  # where the link pointed may name the patient


def test_a_broken_localizer_is_one_line_before_any_work(world, tmp_path):
    model, archive, home = tmp_path / "model", tmp_path / "archive", tmp_path / "home"
    shutil.copytree(world.model, model)
    (model / "localizer.onnx").write_bytes(b"not an onnx model")
    archive.mkdir()
    shutil.copy(world.image, archive / "unannotated.dcm")
    result = cli(world, "ingest", str(archive), "--model", str(model), "--workers", "0", home=home)
    assert_error(world, result, 1, str(model / "localizer.onnx"), "regionmir train-localizer")
    assert not (home / "store").exists() and not (home / "reports").exists()  # nothing was started


def test_a_home_with_markup_in_its_name_gets_its_summary(world, tmp_path):
    """Rich markup in the home's name (``[/x]``) is printed as written, not read as a tag."""
    home = tmp_path / "home-[/x]"
    result = cli(world, "ingest", str(world.archive), "--model", str(world.model), "--workers", "0", home=home)
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    assert "".join(str(home / "store").split()) in "".join(result.stdout.split())  # the console may wrap it
