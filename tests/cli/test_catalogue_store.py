"""The catalogue, store and home cases: what the installed `regionmir` does with damaged store
files, points the store lost, a file size limit, a disk that fills up and a damaged salt.

Damage is real: files truncated, zeroed or removed, `ulimit -f`, a small tmpfs in a private
mount namespace (root and `unshare -m`; skipped with the reason elsewhere).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pydicom
import pytest
from helpers.catalogue import CLI, SALT, assert_clean, assert_error, cli, points

from regionmir.store.embedded import EmbeddedStore


def stored(home: Path) -> dict[str, dict]:
    """Every point of the default collection in ``home``: id -> payload."""
    with EmbeddedStore(home / "store") as store:
        return {p.id: p.payload for p in store.points("regions", limit=100_000)}


def checks(w, home: Path) -> dict[str, dict]:
    """`regionmir doctor --json` of ``home``, by check name."""
    result = cli(w, "doctor", "--model", str(w.model), "--json", home=home)
    assert_clean(w, result)
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def ingest(w, home: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli(w, "ingest", str(w.archive), "--model", str(w.model), "--workers", "0", "--json", *extra, home=home)


@pytest.fixture(scope="module")
def clean(world):
    """The points of a clean ingest of the world's archive (its home)."""
    return stored(world.home)


def needs_mount_namespace() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or \
            subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode:
        pytest.skip("needs root and mount namespaces (unshare -m) to mount a small tmpfs")


# ----------------------------------------------------------------------------- damaged collection files

DAMAGE = {
    # case: (what to do in the collection folder, the file the line must name)
    "meta.json empty": (lambda f: (f / "meta.json").write_bytes(b""), "meta.json"),
    "meta.json not JSON": (lambda f: (f / "meta.json").write_bytes(b"\xff{not json"), "meta.json"),
    "meta.json a list": (lambda f: (f / "meta.json").write_text("[1, 2]"), "meta.json"),
    "meta.json without dim": (lambda f: (f / "meta.json").write_text(json.dumps(
        {k: v for k, v in json.loads((f / "meta.json").read_text()).items() if k != "dim"})), "meta.json"),
    "segments removed": (lambda f: shutil.rmtree(f / "shard" / "segments"), "shard/segments"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_collection_is_named_everywhere_and_its_fix_works(world, tmp_path, case):
    damage, named = DAMAGE[case]
    home = tmp_path / "home"
    shutil.copytree(world.home, home)
    folder = home / "store" / "regions"
    damage(folder)
    for args in (["info"], ["search", "--anatomy", "left-lung", str(world.image), "--model", str(world.model)],
                 ["ingest", str(world.archive), "--model", str(world.model), "--workers", "0"]):
        assert_error(world, cli(world, *args, home=home), 1, f"{folder}/{named}", f"rm -r {folder}",
                     "regionmir ingest")
    store = checks(world, home)["store"]
    assert store["status"] == "FAIL" and f"{folder}/{named}" in store["detail"]
    assert f"rm -r {folder}" in store["fix"]
    shutil.rmtree(folder)  # the fix the line gives
    assert ingest(world, home).returncode == 0 and points(world, home) == points(world)


# ----------------------------------------------------------------------------- points the store lost


@pytest.mark.parametrize("cut", [0, 100], ids=["id tracker zeroed", "id tracker truncated"])
def test_points_the_store_lost_are_found_and_ingested_again(world, clean, tmp_path, cut):
    """The ledger listed every image, so ingest skipped them all and doctor said OK."""
    home = tmp_path / "home"
    assert ingest(world, home).returncode == 0
    (segment,) = (home / "store" / "regions" / "shard" / "segments").iterdir()
    with (segment / "mutable_id_tracker.mappings").open("r+b") as f:
        f.truncate(cut)
    assert len(stored(home)) < len(clean)
    store = checks(world, home)["store"]
    assert store["status"] == "FAIL" and "the store lost" in store["detail"]
    assert "regionmir ingest ARCHIVE" in store["fix"]

    report = tmp_path / "report.jsonl"
    result = ingest(world, home, "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    (warning,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert "WARNING" in warning and "ingested again" in warning
    (repair,) = [r for r in map(json.loads, report.read_text().splitlines()) if r["event"] == "repair"]
    assert json.loads(result.stdout)["ingested"] == repair["images"] > 0
    assert stored(home) == clean
    assert checks(world, home)["store"]["status"] == "OK"
    again = ingest(world, home)
    assert json.loads(again.stdout)["ingested"] == 0 and not again.stderr.strip()


# ----------------------------------------------------------------------------- a file size limit


def test_a_first_create_cut_by_a_file_size_limit_does_not_brick_the_collection(world, clean, tmp_path):
    home = tmp_path / "home"
    limited = subprocess.run(["bash", "-c", 'ulimit -f 2048; exec "$@"', "bash", str(CLI), "ingest", str(world.archive),
                              "--model", str(world.model), "--workers", "0", "--json"], capture_output=True,
                             text=True, timeout=240, check=False,
                             env={**os.environ, "REGIONMIR_HOME": str(home), "REGIONMIR_SALT": SALT, "QDRANT_URL": ""})
    assert_error(world, limited, 1, "File too large", "ulimit -f")
    result = ingest(world, home)
    assert result.returncode == 0, result.stderr
    assert stored(home) == clean


# ----------------------------------------------------------------------------- a disk that fills up

FILL_DURING_INGEST = textwrap.dedent('''
    """In a private mount namespace: ingest on a small tmpfs, fill it while the ingest is
    frozen after a few images, let it go on, then free the space and resume."""
    import glob, json, os, shutil, signal, subprocess, sys, time
    from pathlib import Path

    mount, cli, archive, model, out, leave = sys.argv[1:7]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", mount], check=True)
    home = Path(mount) / "home"
    env = {**os.environ, "REGIONMIR_HOME": str(home)}
    args = [cli, "ingest", archive, "--model", model, "--workers", "0", "--batch-size", "36", "--json"]

    def ledgered():
        files = glob.glob(str(home / "ledgers" / "*.done"))
        lines = open(files[0]).read().split("\\n")[1:] if files else []
        return sum(1 for x in lines if x and not x.startswith("#"))

    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    while proc.poll() is None and ledgered() < 3:  # run it in slices until 3 images are stored
        os.killpg(proc.pid, signal.SIGSTOP)
        if ledgered() >= 3:
            break
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    frozen = ledgered()
    with open(Path(mount) / "fill", "wb", buffering=0) as f:  # until `leave` MiB are free
        try:
            while shutil.disk_usage(mount).free > int(leave) * 2**20 + 2**16:
                f.write(b"\\0" * 2**16)
            while leave == "0":
                f.write(b"\\0" * 2**12)
        except OSError:  # full
            pass
    free = shutil.disk_usage(mount).free
    os.killpg(proc.pid, signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=120)
    first = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr, "frozen": frozen,
             "ledgered": ledgered(), "free": free}
    os.remove(Path(mount) / "fill")
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    from regionmir.store.embedded import EmbeddedStore
    with EmbeddedStore(home / "store") as store:
        points = {p.id: p.payload for p in store.points("regions", limit=100_000)}
    Path(out).write_text(json.dumps({"first": first, "again": {"rc": again.returncode, "stdout": again.stdout,
                                     "stderr": again.stderr}, "points": points}))
''')


@pytest.mark.parametrize("leave", [16, 0], ids=["16 MiB left", "full"])
def test_a_disk_that_fills_during_an_ingest_stops_it_with_one_line_and_it_resumes(world, clean, tmp_path, leave):
    """The free-space check ran only when the store opened: a disk that filled up later killed
    the ingest with SIGBUS and no message. Now every batch checks, keeping a margin (16 MiB
    left: stopped at the next batch), and a shard that cannot flush its files says so (full)."""
    needs_mount_namespace()
    mount, out, driver = tmp_path / "disk", tmp_path / "out.json", tmp_path / "driver.py"
    mount.mkdir()
    driver.write_text(FILL_DURING_INGEST)
    env = {**os.environ, "REGIONMIR_SALT": SALT, "QDRANT_URL": ""}
    run = subprocess.run(["unshare", "-m", sys.executable, str(driver), str(mount), str(CLI), str(world.archive),
                          str(world.model), str(out), str(leave)], env=env, capture_output=True, text=True, timeout=400, check=False)
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    first = doc["first"]
    assert 3 <= first["frozen"] < 12 and first["free"] < 32 * 2**20, first
    result = subprocess.CompletedProcess([], first["rc"], first["stdout"], first["stderr"])
    assert_error(world, result, 1, *(["MiB free", "The stored points are intact"] if leave else ["Free disk space"]),
                 "resumes where it stopped")
    assert first["ledgered"] < 12
    again = doc["again"]
    assert again["rc"] == 0, again["stderr"]
    assert json.loads(again["stdout"])["ingested"] == 12 - first["ledgered"]
    assert doc["points"] == clean


# ----------------------------------------------------------------------------- a damaged salt


def _without_salt_env(w, home: Path, *args: str) -> subprocess.CompletedProcess:
    """``args`` run with the salt file of ``home`` (no REGIONMIR_SALT)."""
    env = {**os.environ, "REGIONMIR_HOME": str(home), "QDRANT_URL": "", "COLUMNS": "100"}
    env.pop("REGIONMIR_SALT", None)
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize("bad", ["not UTF-8", "a folder"])
def test_a_damaged_salt_is_one_line_and_doctor_fails(world, tmp_path, bad):
    home = tmp_path / "home"
    shutil.copytree(world.home, home)
    salt = home / "salt"
    if bad == "a folder":
        salt.mkdir()
    else:
        salt.write_bytes(b"\xff\xfe\x00\x80")
    query = tmp_path / "new.dcm"  # an image not in the store: its patient needs a pseudonym
    ds = pydicom.dcmread(world.image)
    ds.PatientID, ds.SOPInstanceUID = "NEW-PATIENT-1", pydicom.uid.generate_uid()
    ds.save_as(query)
    said = "is a folder" if bad == "a folder" else "is not text"
    for args in (["ingest", str(world.archive), "--model", str(world.model), "--workers", "0", "--collection", "fresh"],
                 ["ingest", str(world.archive), "--model", str(world.model), "--workers", "2", "--collection", "fresh"],
                 ["search", "--anatomy", "left-lung", str(query), "--model", str(world.model)]):
        assert_error(world, _without_salt_env(world, home, *args), 1, str(salt), said, "backup")
    doctor = _without_salt_env(world, home, "doctor", "--model", str(world.model), "--json")
    salt_check = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}["salt"]
    assert doctor.returncode == 1 and salt_check["status"] == "FAIL" and said in salt_check["detail"]
