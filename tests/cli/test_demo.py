"""The README's main job, end to end and small: `regionmir demo` on a tiny phantom archive."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_a_montage(tmp_path):
    home = tmp_path / "home"
    env = {"REGIONMIR_HOME": str(home), "REGIONMIR_SALT": "demo-test", "COLUMNS": "120",
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "regionmir", "demo", "--patients", "4", "--size", "128",
         "--no-localizer"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for command in ("regionmir phantom", "regionmir train", "regionmir ingest", "regionmir search"):
        assert command in done.stdout
    assert "Demo done" in done.stdout and ": top " in done.stdout  # the results table
    assert (home / "demo" / "montage.png").stat().st_size > 0
    assert (home / "model" / "encoder.onnx").is_file()
    # a second run reuses the archive and the model and only ingests (nothing new) and searches
    again = subprocess.run(
        [sys.executable, "-m", "regionmir", "demo", "--patients", "4", "--size", "128",
         "--no-localizer"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "phantom: already done" in again.stdout and "train: already done" in again.stdout
    assert "0 ingested" in again.stdout
