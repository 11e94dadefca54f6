"""Running the installed `regionmir` as a user does, and what every catalogue case asserts.

The catalogue (`tests/cli/test_catalogue*.py`) runs the console script in a subprocess for every
bad input we know of; the `world` fixture it starts from is in `tests/cli/conftest.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom

from helpers.dicom_files import PATIENT
from regionmir.anatomy import Anatomy
from regionmir.archive import Archive

CLI = Path(sys.executable).parent / "regionmir"
SALT = "catalogue-salt"
BOXED = sum(a.boxed for a in Anatomy)  # regions the localizer places (29)


def patient_values(archive: Path) -> set[str]:
    """Names, ids and birth dates in the archive's DICOMs, plus those the bad files carry."""
    values = set(PATIENT.values()) | {"Doe", "Jane"}
    for path in Archive(archive).dicom_paths():
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        for key in ("PatientID", "PatientName", "PatientBirthDate"):
            v = str(ds.get(key, "") or "").strip()
            if len(v) >= 4:
                values.add(v)
    return values


def cli(w, *args: str, home: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the installed console script with ``w``'s home (or ``home``), no server, no terminal."""
    env = {**os.environ, "REGIONMIR_HOME": str(home or w.home), "REGIONMIR_SALT": SALT,
           "QDRANT_URL": "", "COLUMNS": "100"}
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_clean(w, result: subprocess.CompletedProcess) -> None:
    """No traceback and no patient data, on either stream."""
    both = result.stdout + result.stderr
    assert "Traceback" not in both, both
    leaked = [v for v in w.secrets if v in both]
    assert not leaked, f"patient data in the output: {leaked}"


def assert_error(w, result, code: int, *mentions: str) -> str:
    """Exit ``code`` and exactly one `error:` line on stderr that contains every ``mentions``."""
    assert_clean(w, result)
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in mentions:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def points(w, home: Path | None = None) -> int:
    """Points in the default collection of ``home``, counted through `regionmir info --json`."""
    result = cli(w, "info", "--json", home=home)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    return sum(c["points"] for c in doc["collections"])


def ingested_world(root: Path, archive: Path, model: Path, localizer: Path):
    """A model folder (encoder + localizer) under ``root``, and a home there with ``archive``
    ingested through the console script; the catalogue's and the server tests' starting point."""
    import shutil
    from types import SimpleNamespace

    folder = root / "model"
    shutil.copytree(model, folder)
    shutil.copy(Path(localizer) / "localizer.onnx", folder / "localizer.onnx")
    w = SimpleNamespace(root=root, model=folder, archive=archive, home=root / "home",
                        secrets=patient_values(archive))
    done = cli(w, "ingest", str(archive), "--model", str(folder), "--workers", "0", "--json")
    assert done.returncode == 0, done.stderr
    w.image = Archive(archive).dicom_paths()[0]
    return w
