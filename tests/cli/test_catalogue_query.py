"""The catalogue, query side: what `regionmir search` (and `info`, `localize`) give for odd queries.

Cases from the probe of 2026-12-07 (issue 25): user text with Rich markup in it, a header element
of impossible length, scene graphs of the wrong shape or size, a query named like an archived
image, unusable boxes, tiny images, Ctrl-C, and a REGIONMIR_HOME that is a file. Every case runs
the installed console script, as `tests/cli/test_catalogue.py` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.catalogue import CLI, SALT, assert_clean, assert_error, cli
from helpers.dicom_files import write_dicom

RAMP = (np.arange(256 * 256, dtype=np.uint16).reshape(256, 256) * 7) % 4096  # (256, 256)


def search(w, query: Path, *extra: str):
    """`regionmir search --anatomy left-lung QUERY` with ``w``'s model."""
    return cli(w, "search", "--anatomy", "left-lung", str(query), "--model", str(w.model), *extra)


@pytest.fixture(scope="module")
def query(world) -> Path:
    """A 256x256 film that is not in the collection (its regions come from elsewhere)."""
    (world.root / "query").mkdir(exist_ok=True)
    return write_dicom(world.root / "query" / "new-film.dcm", RAMP, bits_stored=12)


# ----------------------------------------------------------------------------- user text is shown as written


def test_info_shows_a_home_with_markup_in_its_name(world, tmp_path):
    """`REGIONMIR_HOME=...-[/x]` once made `regionmir info` end in a MarkupError traceback."""
    import shutil

    home = tmp_path / "home-[/x]:thumbs_up:"
    shutil.copytree(world.home, home)
    result = cli(world, "info", home=home)
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    assert f"Store: {home / 'store'}" in result.stdout


def test_search_shows_a_query_name_with_markup_as_written(world, tmp_path):
    """A query at `.../[bold]q.dcm` was shown as "Query q"."""
    odd = write_dicom(tmp_path / "[bold]q[red]:thumbs_up:.dcm", RAMP, bits_stored=12)
    result = search(world, odd)
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    assert "Query [bold]q[red]:thumbs_up: (not in the collection" in result.stdout


def test_localize_shows_a_file_name_with_markup_as_written(world, tmp_path):
    odd = write_dicom(tmp_path / "[red]l[i].dcm", RAMP, bits_stored=12)
    result = cli(world, "localize", str(odd), "--model", str(world.model))
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    assert "[red]l[i].dcm 256x256" in result.stdout


# ----------------------------------------------------------------------------- a damaged header


def test_a_header_element_of_impossible_length_is_one_line(world, tmp_path):
    """SamplesPerPixel (US) with a 1-byte value: once a BytesLengthException traceback."""
    path = write_dicom(tmp_path / "spp_odd.dcm", RAMP, bits_stored=12)
    raw = path.read_bytes()
    at = raw.index(b"\x28\x00\x02\x00US\x02\x00")  # (0028,0002) US, length 2 -> length 1
    path.write_bytes(raw[:at + 6] + b"\x01\x00\x01" + raw[at + 10:])
    assert_error(world, search(world, path), 1, "Cannot read image", "spp_odd.dcm", "(0028,0002)",
                 "wrong length")


# ----------------------------------------------------------------------------- --scene-graph files

LEFT_LUNG = {"bbox_name": "left lung", "original_x1": 140, "original_y1": 40, "original_x2": 230,
             "original_y2": 200}

BAD_SCENE_GRAPHS = {
    # file name: (content, what the error line must say)
    "objects_str.json": ('{"image_id": "x", "objects": "notalist"}', "'objects' must be a list"),
    "objects_items.json": ('{"image_id": "x", "objects": ["x", 5]}', "found a string in it"),
    "attrs_int.json": ('{"image_id": "x", "objects": [], "attributes": 5}', "'attributes' must be a list"),
    "attrs_str.json": ('{"image_id": "x", "objects": [], "attributes": ["s"]}', "found a string in it"),
    "deep.json": ("[" * 100_000 + "]" * 100_000, "too deeply"),
    "copies.json": (json.dumps({"image_id": "x", "objects": [LEFT_LUNG] * 20_000}), "20000 entries"),
}


@pytest.mark.parametrize("name", list(BAD_SCENE_GRAPHS))
def test_a_scene_graph_of_the_wrong_shape_is_one_line(world, query, tmp_path, name):
    """Once AttributeError, TypeError and RecursionError tracebacks; 20,000 copies of one object
    (2 MB) took 14 s and 768 MB and listed 20,000 query regions."""
    content, reason = BAD_SCENE_GRAPHS[name]
    (tmp_path / name).write_text(content)
    assert_error(world, search(world, query, "--scene-graph", str(tmp_path / name)), 1, name, reason)


def test_a_scene_graph_boxing_one_anatomy_twice_gives_one_region(world, query, tmp_path):
    """The first box of each anatomy is the query's, as the ingest keeps it; the rest is said once."""
    later = dict(LEFT_LUNG, original_x1=100)
    right = dict(LEFT_LUNG, bbox_name="right lung", original_x1=20, original_x2=110)
    path = tmp_path / "twice.json"
    path.write_text(json.dumps({"image_id": "x", "objects": [LEFT_LUNG, right, later, LEFT_LUNG]}))
    result = search(world, query, "--scene-graph", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert_clean(world, result)
    regions = json.loads(result.stdout)["query"]["regions"]
    assert regions == [{"anatomy": "left-lung", "box": [140.0, 40.0, 230.0, 200.0], "source": "scene-graph"}]
    assert "left lung more than once: the first box of each is used" in result.stderr


# ----------------------------------------------------------------------------- a query named like an archived image


def test_a_query_named_like_an_archived_image_is_a_new_image(world, tmp_path):
    """An 8x8 film saved as `<archived image id>.dcm` took that image's boxes (outside 8x8) and
    left that image's patient out of the results."""
    namesake = write_dicom(tmp_path / world.image.name, (np.arange(64, dtype=np.uint16).reshape(8, 8) * 50),
                           bits_stored=12)
    result = search(world, namesake, "--json", "--top-k", "100")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["query"]["in_collection"] is False and doc["query"]["same_patient_excluded"] is False
    (region,) = doc["query"]["regions"]
    assert region["source"] == "localizer" and max(region["box"]) <= 8
    assert world.image.stem in {h["image_id"] for h in doc["results"]}  # the archived one is a hit


def test_the_archived_image_itself_is_still_found_by_its_name(world, tmp_path):
    """The same file elsewhere (same SOPInstanceUID) is the archived image: its own boxes, its patient out."""
    import shutil

    copy = tmp_path / "elsewhere" / world.image.name
    copy.parent.mkdir()
    shutil.copy(world.image, copy)
    doc = json.loads(search(world, copy, "--json", "--top-k", "100").stdout)
    assert doc["query"]["in_collection"] is True and doc["query"]["same_patient_excluded"] is True
    assert doc["query"]["regions"][0]["source"] == "archive"
    assert world.image.stem not in {h["image_id"] for h in doc["results"]}


# ----------------------------------------------------------------------------- one way for each kind of mistake


def test_a_flag_given_a_value_points_to_the_subcommand_help(world):
    result = search(world, world.image, "--json=maybe")
    assert_error(world, result, 2, "--json", "`regionmir search --help`")


BOXES = {
    # --box: what the error line must say
    "nan,0,10,10": "not a finite number",
    "inf,0,inf,10": "not a finite number",
    "-inf,0,inf,10": "not a finite number",
    "0,0,1e400,10": "not a finite number",
    "5000,5000,5100,5100": "lies outside the 256x256 image",
    "-10,-10,-5,-5": "lies outside the 256x256 image",
    "10,10,11,11": "smaller than 2 px",
}


@pytest.mark.parametrize("box", list(BOXES))
def test_every_unusable_box_is_a_usage_error(world, query, box):
    """nan and inf exited 2, -inf, 1e400, outside the image and below 2 px exited 1."""
    line = assert_error(world, search(world, query, "--box", box), 2, "--box", BOXES[box],
                        "`regionmir search --help`")
    assert "is empty" not in line


@pytest.mark.parametrize("shape", [(1, 1), (1, 4000)])
def test_a_line_of_pixels_is_called_too_small(world, tmp_path, shape):
    """"The localizer takes a 2-D grey image; got shape (1, 1)": it is 2-D."""
    path = write_dicom(tmp_path / "line.dcm", np.full(shape, 100, np.uint16), bits_stored=12)
    line = assert_error(world, search(world, path), 1, f"{shape[1]}x{shape[0]} pixels", "too small")
    assert "2-D" not in line


def test_a_patient_that_matches_nothing_is_explained_not_sent_to_the_results(world):
    """Hits carry no patient field: the hint once pointed to them for stored values."""
    line = assert_error(world, search(world, world.image, "--where", "patient=XYZ-1"), 1,
                        "--where patient=XYZ-1", "pseudonym")
    assert "search --json" not in line


@pytest.mark.parametrize("command", [["info"], ["info", "--json"], ["search", "--anatomy", "left-lung", "IMAGE"],
                                     ["ingest", "ARCHIVE"]])
def test_a_home_that_is_a_file_is_said(world, tmp_path, command):
    """`REGIONMIR_HOME=/etc/hostname`: info listed an empty store, search and ingest found "no model"."""
    home = tmp_path / "hostname"
    home.write_text("box\n")
    args = [{"IMAGE": str(world.image), "ARCHIVE": str(world.archive)}.get(a, a) for a in command]
    model = [] if command[0] == "info" else ["--model", str(world.model)]
    assert_error(world, cli(world, *args, *model, home=home), 1, "REGIONMIR_HOME is not a folder", str(home))
    assert home.read_text() == "box\n"


def _store_is_open(pid: int, store: Path) -> bool:
    """Whether process ``pid`` holds a file of ``store`` open: the command itself is running."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(store)) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone, or an fd closed while we looked
        return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see when the search has started")
def test_ctrl_c_during_a_search_says_interrupted(world, tmp_path):
    """Exit 130 with nothing on stderr: typer turned KeyboardInterrupt into a silent exit."""
    big = write_dicom(tmp_path / "big.dcm", np.tile(RAMP, (16, 16)), bits_stored=12)  # 4096 px: a second of work
    env = {**os.environ, "REGIONMIR_HOME": str(world.home), "REGIONMIR_SALT": SALT, "QDRANT_URL": ""}
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # a background job's: the child would inherit it
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([str(CLI), "search", "--anatomy", "left-lung", str(big), "--model", str(world.model),
                                 "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    deadline = time.monotonic() + 60
    while not _store_is_open(proc.pid, world.home / "store") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and out == "", (proc.returncode, err)
    assert err.splitlines() == ["error: interrupted"], err
