"""The benchmarks run and print their figures (tiny sizes; speed is never asserted here).

bench/README.md's numbers come from these scripts: a change that breaks one (a stage's return
value, a renamed option) must fail here, not at the next `make bench`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str, tmp_path: Path) -> list[dict]:
    """Run ``bench/<script>`` like a user does; its JSON lines."""
    env = {**os.environ, "REGIONMIR_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env.pop("QDRANT_URL", None)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_bench_ingest_prints_the_floor_and_its_ratio(tmp_path):
    last = run_bench("bench_ingest.py", "--patients", "3", "--size", "512", "--workers", "2", "--batch-size", "72",
                     tmp_path=tmp_path)[-1]  # three batches: a steady part to measure
    assert last["bench"] == "ingest" and last["films"] == 6 and last["regions"] == 6 * 36
    for step in ("decode_ms", "crop_ms", "encode_ms"):
        assert last[step] > 0
    per_film = last["decode_ms"] + last["crop_ms"] + last["encode_ms"]
    assert last["floor_films_s"] == pytest.approx(2 * 1000 / per_film, rel=1e-3)
    assert last["floor_ratio"] == pytest.approx(last["ingest_films_s"] / last["floor_films_s"])


def test_bench_search_scale_prints_each_size(tmp_path):
    rows = run_bench("bench_search_scale.py", "--sizes", "3600", "--queries", "20", "--cli-runs", "1",
                     "--tmp", str(tmp_path), tmp_path=tmp_path)
    row = next(r for r in rows if r["bench"] == "search_scale_row")
    assert row["n"] == 3600 and row["variant"] == "int8-disk" and row["index_builds"] == 1 and row["segments"] >= 1
    for key in ("open_s", "rss_open_mib", "upsert_s", "build_s", "disk_b_per_region", "cli_wall_s"):
        assert row[key] > 0, key
    assert row["ann"]["recall"] >= 0.9 and row["exact"]["recall"] == 1.0  # exact search is exact
    assert row["ann"]["p95_ms"] >= row["ann"]["p50_ms"] > 0


def test_bench_train_cache_prints_memory_per_phase(tmp_path):
    rows = run_bench("bench_train_cache.py", "--archive", str(tmp_path / "archive"), "--generate", "--films", "16",
                     "--epochs", "1", "--tmp", str(tmp_path / "tmp"), tmp_path=tmp_path)
    assert len(rows) == 1 and rows[0]["films"] == 16
    row = rows[0]
    assert row["train_crops"] > 0 and row["eval_crops"] > 0 and 0.0 <= row["accuracy"] <= 1.0
    assert row["cache_mib"] > 0
