"""Cold `regionmir search` wall time on a 1024x1024 DICOM against a 100k-region collection, its split,
and in-process filtered query latency p50/p95 with recall@10 against exact search.

    .venv/bin/python bench/bench_search_cli.py [--points 100000] [--model DIR] [--runs 3] [--queries 200]

The collection holds a phantom archive ingested for real (1024 px, minus one held-out image
that becomes the query) and is filled to ``--points`` with synthetic points: each is a real
embedding of the same anatomy plus Gaussian noise (renormalised), with a realistic payload
(anatomy, image/study/patient ids, box, view, findings at the phantom's rate, path).
The query goes through the real decode, localizer and encoder: it is not in the collection,
so its box comes from the localizer (an untrained one of the default architecture when
--model has none: same cost). Without --model an untrained encoder of `regionmir train`'s
default architecture is exported (needs torch; the search itself does not import it).
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
from bench_ingest import default_model  # noqa: E402


def add_localizer(folder: Path) -> None:
    """An untrained localizer of the default architecture (192 px, width 16) in ``folder``."""
    import torch

    from regionmir.inference.folder import LOCALIZER_FILE
    from regionmir.train.localizer.model import LocalizerNet
    from regionmir.train.localizer.run import LocalizerConfig, write_model

    torch.manual_seed(0)
    cfg = LocalizerConfig()
    template = torch.tensor([[0.3, 0.3, 0.7, 0.7]] * 29)
    write_model(LocalizerNet(cfg.size, template, width=cfg.width), cfg, "bench", folder / LOCALIZER_FILE)


def held_out_archive(root: Path, query_dir: Path, size: int) -> Path:
    """A phantom archive at ``size`` px with its last image moved out; returns the query DICOM."""
    from regionmir.archive import Archive
    from regionmir.phantom import generate_archive

    generate_archive(root, seed=3, patients=4, studies_per_patient=2, size=size, workers=2)
    archive = Archive(root)
    last = archive.dicom_paths()[-1]
    query_dir.mkdir(parents=True, exist_ok=True)
    query = query_dir / "query.dcm"
    shutil.move(last, query)
    sg = archive.scene_graph_path(last.stem)
    if sg:
        sg.unlink()
    return query


def real_vectors(archive: Path, encoder) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Embeddings of the archive's regions by anatomy, and their payload templates."""
    from regionmir.archive import Archive
    from regionmir.ingest.sources import plan
    from regionmir.ingest.stages import Prepared, Preparer

    tasks, _ = plan(Archive(archive))
    prep = Preparer(archive, encoder.spec)
    by_anatomy: dict[str, list] = {}
    templates = []
    for p in map(prep, tasks):
        if not isinstance(p, Prepared):
            continue
        emb, _ = encoder.embed(p.crops)
        for region, v in zip(p.regions, emb):
            by_anatomy.setdefault(region["anatomy"], []).append(v)
            templates.append({**p.fields, **region})
    return {k: np.stack(v) for k, v in by_anatomy.items()}, templates


def fill(store, name: str, encoder, vectors: dict, templates: list[dict], n: int, seed: int = 0) -> None:
    """Upsert ``n`` synthetic points shaped like the real ones."""
    from regionmir.store import PointRecord, point_id

    rng = np.random.default_rng(seed)
    slugs = sorted(vectors)
    rate = np.mean([bool(t["findings"]) for t in templates])
    findings = sorted({f for t in templates for f in t["findings"]}) or ["lung opacity"]
    template_of = {t["anatomy"]: t for t in templates}
    batch, made = [], 0
    while made < n:
        img = made // len(slugs)
        slug = slugs[made % len(slugs)]
        base = vectors[slug][rng.integers(len(vectors[slug]))]
        v = base + rng.normal(0, 0.5 / np.sqrt(encoder.dim), encoder.dim)  # noise norm ~0.5
        v = (v / np.linalg.norm(v)).astype(np.float32)
        t = template_of[slug]
        payload = {
            **t, "image_id": f"syn{img:07d}", "study_id": f"9{img // 2:07d}", "patient": f"pt-{img // 4:016x}",
            "view": "PA" if rng.random() < 0.75 else "AP", "path": f"files/p19/*/s9{img // 2:07d}/syn{img:07d}.dcm",
            "findings": [str(rng.choice(findings))] if rng.random() < rate else [], "model_id": encoder.model_id,
        }
        batch.append(PointRecord(point_id(f"syn{img}", slug, encoder.model_id), v, payload))
        made += 1
        if len(batch) == 4096:
            store.upsert(name, batch)
            batch = []
    if batch:
        store.upsert(name, batch)


def cold_runs(query: Path, model: Path, runs: int, anatomy: str = "left-lung") -> list[dict]:
    """Wall time and in-command split of ``runs`` fresh `regionmir search` processes."""
    cli = Path(sys.executable).parent / "regionmir"
    out = []
    for _ in range(runs):
        t, launched = time.perf_counter(), time.time()
        done = subprocess.run([str(cli), "search", "--anatomy", anatomy, str(query), "--model", str(model),
                               "--json"], capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
        doc = json.loads(done.stdout)
        timings = doc["timings_s"]
        startup = doc["started_unix"] - launched  # interpreter + typer + CLI module imports
        timings["startup+imports"] = startup + timings["import"]
        timings["close+exit"] = wall - startup - timings["total_in_command"]
        out.append({"wall": wall, **timings})
    return out


def latency(store, name: str, vectors: dict, queries: int, seed: int = 1) -> dict:
    """p50/p95 of filtered HNSW queries (top 10, one anatomy) and recall@10 against exact."""
    from regionmir.store import Filter

    rng = np.random.default_rng(seed)
    slugs = sorted(vectors)
    times, recalls = [], []
    for _ in range(queries):
        slug = slugs[rng.integers(len(slugs))]
        q = vectors[slug][rng.integers(len(vectors[slug]))] + rng.normal(0, 0.3 / np.sqrt(len(vectors[slug][0])), len(vectors[slug][0]))
        f = Filter(must={"anatomy": slug})
        t = time.perf_counter()
        ann = store.search(name, q, 10, f)
        times.append(time.perf_counter() - t)
        exact = store.search(name, q, 10, f, exact=True)
        recalls.append(len({h.id for h in ann} & {h.id for h in exact}) / max(1, len(exact)))
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "recall@10": float(np.mean(recalls))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (store, model, query)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    os.environ["REGIONMIR_HOME"] = str(tmp / "home")
    os.environ.pop("QDRANT_URL", None)
    model = args.model or default_model(tmp / "model")
    from regionmir.inference.folder import ModelFolder

    if ModelFolder(model).localizer_file is None:
        if args.model:
            model = Path(shutil.copytree(args.model, tmp / "model"))
        add_localizer(model)
    query = held_out_archive(tmp / "archive", tmp / "query", args.size)

    from regionmir.inference.encoder import load_encoder
    from regionmir.ingest.runner import IngestConfig, run_ingest
    from regionmir.store import open_store

    s = run_ingest(IngestConfig(tmp / "archive", model))
    enc = load_encoder(model)
    vectors, templates = real_vectors(tmp / "archive", enc)
    store = open_store(path=tmp / "home" / "store")
    t = time.perf_counter()
    fill(store, "regions", enc, vectors, templates, args.points - s.regions)
    fill_s = time.perf_counter() - t
    t = time.perf_counter()
    store.build_index("regions")
    index_s = time.perf_counter() - t
    total = store.count("regions")
    store.close()
    print(f"collection: {total} points ({s.regions} real, {enc.dim}-d); fill {fill_s:.1f} s, build_index {index_s:.1f} s")

    runs = cold_runs(query, model, args.runs)
    keys = ["wall", "startup+imports", "open_store", "model_load", "model_wait", "collection_check", "decode",
            "lookup", "localizer_load", "localize", "encode", "query", "close+exit"]
    med = {k: float(np.median([r.get(k, 0.0) for r in runs])) for k in keys}
    print(f"cold `regionmir search` on a {args.size}x{args.size} DICOM (median of {args.runs}):")
    for k in keys:
        note = "  (in a thread, overlapping open_store)" if k == "model_load" else ""
        print(f"  {k:16s} {med[k] * 1000:8.1f} ms{note}")

    store = open_store(path=tmp / "home" / "store")
    lat = latency(store, "regions", vectors, args.queries)
    store.close()
    print(f"in-process filtered query (top 10, one anatomy, {args.queries} queries): "
          f"p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, recall@10 vs exact {lat['recall@10']:.3f}")
    print(json.dumps({"bench": "search_cli", "points": total, "size": args.size, "runs": args.runs,
                      "fill_s": fill_s, "index_s": index_s, "cold_median_s": med, "query": lat}))
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
