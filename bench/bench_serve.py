"""Cold `regionmir search` process time through a running `regionmir serve` against in-process.

    .venv/bin/python bench/bench_serve.py [--points 50000] [--model DIR] [--runs 3] [--size 1024]

The collection is bench_search_cli.py's: a phantom archive ingested for real, minus one held-out
image that becomes the query (its boxes come from the localizer), filled to ``--points`` with
synthetic points shaped like the real ones. Each run is a fresh `regionmir search --json`
process, timed from launch to exit: first ``--no-server`` (it opens the store and loads the
models), then with the server running for the same home (found through its serve.json). The
two must answer with the same ids and scores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest import default_model
from bench_search_cli import add_localizer, fill, held_out_archive, real_vectors

CLI = Path(sys.executable).parent / "regionmir"


def build_home(tmp: Path, points: int, size: int, model: Path | None) -> tuple[Path, Path, int]:
    """``(model folder, query DICOM, points)``: a home at ``tmp/home`` filled as bench_search_cli does."""
    from regionmir.inference.encoder import load_encoder
    from regionmir.inference.folder import ModelFolder
    from regionmir.ingest.runner import IngestConfig, run_ingest
    from regionmir.store import open_store

    model = Path(shutil.copytree(model, tmp / "model")) if model else default_model(tmp / "model")
    if ModelFolder(model).localizer_file is None:
        add_localizer(model)
    query = held_out_archive(tmp / "archive", tmp / "query", size)
    s = run_ingest(IngestConfig(tmp / "archive", model))
    enc = load_encoder(model)
    vectors, templates = real_vectors(tmp / "archive", enc)
    store = open_store(path=tmp / "home" / "store")
    fill(store, "regions", enc, vectors, templates, max(0, points - s.regions))
    store.build_index("regions")
    total = store.count("regions")
    store.close()
    return model, query, total


def cold(query: Path, model: Path, runs: int, *extra: str) -> list[tuple[float, dict]]:
    """``(wall seconds, --json document)`` of ``runs`` fresh `regionmir search` processes."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run([str(CLI), "search", "--anatomy", "left-lung", str(query), "--json", *extra],
                              capture_output=True, text=True, check=True)
        out.append((time.perf_counter() - t, json.loads(done.stdout)))
    return out


def start_server(home: Path, model: Path) -> tuple[subprocess.Popen, float]:
    """`regionmir serve --port 0` on ``home``; the process and the seconds until it announced itself."""
    t = time.perf_counter()
    proc = subprocess.Popen([str(CLI), "serve", "--port", "0", "--model", str(model)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (home / "serve.json").exists():
        if proc.poll() is not None:
            raise SystemExit(f"serve exited {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.05)
    return proc, time.perf_counter() - t


def ranked(doc: dict) -> list:
    return [(h["id"], h["score"]) for h in doc["results"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    home = tmp / "home"
    os.environ["REGIONMIR_HOME"] = str(home)
    os.environ.pop("QDRANT_URL", None)
    try:
        model, query, total = build_home(tmp, args.points, args.size, args.model)
        local = cold(query, model, args.runs, "--no-server", "--model", str(model))
        proc, start_s = start_server(home, model)
        try:
            served = cold(query, model, args.runs)
        finally:
            proc.send_signal(2)
            proc.wait(timeout=60)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = all(ranked(d) == ranked(local[0][1]) for _, d in local + served)
    row = {"bench": "serve", "points": total, "size": args.size, "runs": args.runs, "same_results": same,
           "in_process_wall_s": float(np.median([w for w, _ in local])),
           "server_start_s": start_s, "through_server_wall_s": float(np.median([w for w, _ in served])),
           "server_side_s": float(np.median([d["timings_s"]["total_in_command"] for _, d in served]))}
    print(f"{total} points, {args.size}px query, median of {args.runs} cold `regionmir search` processes: "
          f"in-process {row['in_process_wall_s']:.2f} s, through the server {row['through_server_wall_s']:.2f} s "
          f"(server side {row['server_side_s'] * 1000:.0f} ms; server start {start_s:.1f} s); same results: {same}")
    print(json.dumps(row))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
