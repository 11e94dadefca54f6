"""Filtered search (one anatomy) at 10k..1M regions: embedded qdrant-edge vs numpy vs qdrant-client local.

    nice -n 5 .venv/bin/python bench/bench_search_scale.py --sizes 10000 100000 1000000

Synthetic 128-d unit vectors shaped like region embeddings: 36 anatomy centres, sub-clusters
(cases) inside each anatomy, Gaussian noise; realistic payloads. Queries are fresh draws from
the same model (not stored points). For each size it measures:

- edge: regionmir.store.EmbeddedStore in the production layout (one shard, one HNSW graph per
  anatomy), batched upsert, build_index, p50/p95 of ``store.search`` with an anatomy filter and
  recall@10 against exact; disk per region, RSS growth while loading and of a cold open in a
  fresh process. Qdrant scans a filtered subset exactly when it is smaller than
  full_scan_threshold (per segment), so the row says which path served the queries.
- edge forced: the same with full_scan_threshold / indexing_threshold lowered so that every
  anatomy gets a graph and every query walks it.
- numpy: exact scan, ``x[idx_a] @ q`` over precomputed per-anatomy index arrays, then top 10.
- qdrant-client local mode (pure Python), at sizes up to --local-max, with few queries at 100k.

The last line is a JSON object with every number (for bench/run_all.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench_store import disk_bytes  # bench/ is on sys.path when a bench runs as a script
from regionmir.anatomy import ALL
from regionmir.store.base import Filter, PointRecord
from regionmir.store.embedded import EdgeOptions, EmbeddedStore

SLUGS = [a.slug for a in ALL]
BATCH = 4096  # points per EmbeddedStore.upsert call


class Synth:
    """Generator of region-like unit vectors: anatomy centre + sub-cluster offset + noise."""

    def __init__(self, dim: int, seed: int = 0, subclusters: int = 40):
        rng = np.random.default_rng(seed)
        self.dim, self.subclusters = dim, subclusters
        self.centres = rng.normal(size=(len(SLUGS), dim))  # (36, dim)
        self.subs = rng.normal(size=(len(SLUGS), subclusters, dim))  # (36, S, dim)

    def draw(self, anat: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        """(len(anat), dim) float32 unit vectors and their sub-cluster index."""
        sub = rng.integers(0, self.subclusters, size=len(anat))
        x = self.centres[anat] + 0.6 * self.subs[anat, sub] + 0.5 * rng.normal(size=(len(anat), self.dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), sub

    def dataset(self, n: int, seed: int = 1):
        """(n, dim) vectors, anatomy index and sub-cluster per point (one image = 36 regions)."""
        rng = np.random.default_rng(seed)
        anat = np.arange(n) % len(SLUGS)  # (n,)
        x = np.empty((n, self.dim), np.float32)
        sub = np.empty(n, np.int64)
        for s in range(0, n, 100_000):
            x[s : s + 100_000], sub[s : s + 100_000] = self.draw(anat[s : s + 100_000], rng)
        return x, anat, sub


def payload(i: int, a: int, sub: int) -> dict:
    """A payload like a real region point (no patient data: ids are synthetic)."""
    img = i // len(SLUGS)
    return {"anatomy": SLUGS[a], "image_id": f"img{img:07d}", "study_id": f"st{img // 2:07d}",
            "patient": f"pt-{img // 5:016x}", "view": "PA" if img % 3 else "AP", "modality": "CR",
            "box": [12, 40, 300, 420], "path": f"files/p10/p{img // 5}/s{img // 2}/{img}.dcm",
            "model_id": "bench", "findings": ["effusion"] if sub % 7 == 0 else [],
            "box_source": "annotation", "confidence": None}


def rss_mib() -> float:
    """Resident set size of this process in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(times: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def exact_top(x, idx_of, q, a, k: int = 10) -> np.ndarray:
    """Exact top-k point indices within anatomy ``a`` (the numpy baseline)."""
    idx = idx_of[a]
    s = x[idx] @ q  # (n_a,)
    part = np.argpartition(-s, k)[:k]
    return idx[part[np.argsort(-s[part])]]


def recall(got: list[int], truth: np.ndarray) -> float:
    return len(set(got) & set(truth.tolist())) / len(truth)


def bench_numpy(x, idx_of, queries, qanat, truth) -> dict:
    """Exact numpy scan per query, gathering ``x[idx_a]``; recall is 1 by construction (ties aside)."""
    lat = []
    for q, a in zip(queries, qanat):
        t = time.perf_counter()
        exact_top(x, idx_of, q, a)
        lat.append(time.perf_counter() - t)
    p50, p95 = pct(lat)
    return {"p50_ms": p50, "p95_ms": p95, "recall": 1.0,
            "mem_mib": (x.nbytes + sum(i.nbytes for i in idx_of)) / 2**20}


def bench_numpy_blocks(x, idx_of, queries, qanat, truth) -> dict:
    """Exact numpy scan over per-anatomy contiguous matrices (no gather: the layout a numpy app would keep)."""
    blocks = [np.ascontiguousarray(x[i]) for i in idx_of]  # 36 x (n_a, dim)
    lat, rec = [], []
    for q, a, tr in zip(queries, qanat, truth):
        t = time.perf_counter()
        s = blocks[a] @ q  # (n_a,)
        part = np.argpartition(-s, 10)[:10]
        top = idx_of[a][part[np.argsort(-s[part])]]
        lat.append(time.perf_counter() - t)
        rec.append(recall(top.tolist(), tr))
    p50, p95 = pct(lat)
    return {"p50_ms": p50, "p95_ms": p95, "recall": float(np.mean(rec)),
            "mem_mib": sum(b.nbytes + i.nbytes for b, i in zip(blocks, idx_of)) / 2**20}


def cold_open(path: Path, nq: int = 36) -> dict:
    """RSS growth and first-query time of opening the store in a fresh process."""
    code = f"""
import json, time, numpy as np, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_search_scale import rss_mib, SLUGS
from regionmir.store.base import Filter
from regionmir.store.embedded import EmbeddedStore
r0 = rss_mib(); t = time.perf_counter()
s = EmbeddedStore({str(path)!r}); s.count("bench")
r1 = rss_mib(); t_open = time.perf_counter() - t
q = np.random.default_rng(5).normal(size=s._dim("bench")).astype(np.float32)
t = time.perf_counter(); s.search("bench", q, 10, Filter(must={{"anatomy": SLUGS[0]}})); t_first = time.perf_counter() - t
for a in SLUGS: s.search("bench", q, 10, Filter(must={{"anatomy": a}}))
print(json.dumps({{"open_s": t_open, "first_query_ms": t_first * 1000, "rss_open_mib": r1 - r0,
                  "rss_queried_mib": rss_mib() - r0}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def search_path(info, per_anatomy: int, opts: EdgeOptions, dim: int, probe: dict) -> str:
    """Which path served one-anatomy queries: Qdrant scans a segment's filtered subset exactly when it
    is below full_scan_threshold; the hnsw_ef=10 probe shows whether a graph was walked."""
    if info.indexed_vectors_count == 0:
        return "exact scan (no HNSW built: segments below indexing_threshold)"
    thr = (opts.full_scan_threshold_kb or 10_000) * 1024 // (dim * 4)
    share = probe["probe_ef10_inexact_share"]
    how = f"HNSW (>= {share:.0%} of queries walked a graph)" if share > 0 else "exact scan (probe stays exact)"
    return (f"{how}; {info.segments_count} segments, avg {per_anatomy / max(1, info.segments_count):.0f} "
            f"pts/anatomy/segment vs full_scan_threshold {thr} pts")


def probe_graph(store: EmbeddedStore, queries, qanat, truth) -> dict:
    """Re-run the queries with hnsw_ef=10: an exact scan stays at recall 1, a graph walk slips.

    The share of queries that lose a true neighbour is a lower bound on the share a graph served.
    """
    opts, store.options = store.options, dataclasses.replace(store.options, hnsw_ef=10)
    try:
        rec = [recall([uuid.UUID(h.id).int for h in store.search("bench", q, 10, Filter(must={"anatomy": SLUGS[a]}))], tr)
               for q, a, tr in zip(queries, qanat, truth)]
    finally:
        store.options = opts
    return {"probe_ef10_recall": float(np.mean(rec)), "probe_ef10_inexact_share": float(np.mean(np.array(rec) < 1))}


def bench_edge(x, anat, sub, queries, qanat, truth, opts: EdgeOptions, keep_exact: bool) -> dict:
    """EmbeddedStore: batched upsert, build_index, filtered queries; returns its numbers."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    r0 = rss_mib()
    store = EmbeddedStore(tmp, opts)
    store.create_collection("bench", x.shape[1], {"model_id": "bench"})
    t = time.perf_counter()
    for s in range(0, len(x), BATCH):
        store.upsert("bench", [PointRecord(str(uuid.UUID(int=i)), x[i], payload(i, anat[i], sub[i]))
                               for i in range(s, min(s + BATCH, len(x)))])
    t_up = time.perf_counter() - t
    r_loaded = rss_mib()
    t = time.perf_counter()
    store.build_index("bench")
    t_build = time.perf_counter() - t
    r_built = rss_mib()
    info = store._shard("bench").info()
    for a in range(len(SLUGS)):  # warm-up: page in every anatomy on both paths before timing
        for exact in (False, True):
            store.search("bench", queries[0], 10, Filter(must={"anatomy": SLUGS[a]}), exact=exact)
    lat, rec, lat_x, rec_x = [], [], [], []
    for q, a, tr in zip(queries, qanat, truth):
        f = Filter(must={"anatomy": SLUGS[a]})
        t = time.perf_counter()
        hits = store.search("bench", q, 10, f)
        lat.append(time.perf_counter() - t)
        rec.append(recall([uuid.UUID(h.id).int for h in hits], tr))
        if keep_exact:
            t = time.perf_counter()
            hits = store.search("bench", q, 10, f, exact=True)
            lat_x.append(time.perf_counter() - t)
            rec_x.append(recall([uuid.UUID(h.id).int for h in hits], tr))
    probe = probe_graph(store, queries, qanat, truth)
    store.close()
    total, no_wal = disk_bytes(tmp)
    cold = cold_open(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    p50, p95 = pct(lat)
    out = {"upsert_s": t_up, "upsert_pts_s": len(x) / t_up, "build_s": t_build,
           "segments": info.segments_count, "indexed": info.indexed_vectors_count,
           "path": search_path(info, len(x) // len(SLUGS), opts, x.shape[1], probe),
           "p50_ms": p50, "p95_ms": p95, "recall": float(np.mean(rec)),
           "disk_b_per_region": total / len(x), "disk_b_per_region_no_wal": no_wal / len(x),
           "rss_load_mib": r_loaded - r0, "rss_built_mib": r_built - r0, **probe, **cold}
    if keep_exact:
        out["exact_p50_ms"], out["exact_p95_ms"] = pct(lat_x)
        out["exact_recall"] = float(np.mean(rec_x))
    return out


def bench_local(x, anat, sub, queries, qanat, truth, nq: int) -> dict:
    """qdrant-client local mode (in memory, pure Python): upsert and filtered query."""
    import warnings

    from qdrant_client import QdrantClient, models

    r0 = rss_mib()
    c = QdrantClient(location=":memory:")
    c.create_collection("b", vectors_config=models.VectorParams(size=x.shape[1], distance=models.Distance.COSINE))
    t = time.perf_counter()
    for s in range(0, len(x), BATCH):
        c.upsert("b", [models.PointStruct(id=i, vector=x[i].tolist(), payload=payload(i, anat[i], sub[i]))
                       for i in range(s, min(s + BATCH, len(x)))])
    t_up = time.perf_counter() - t
    r1 = rss_mib()
    lat, rec = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for q, a, tr in list(zip(queries, qanat, truth))[:nq]:
            flt = models.Filter(must=[models.FieldCondition(key="anatomy", match=models.MatchValue(value=SLUGS[a]))])
            t = time.perf_counter()
            res = c.query_points("b", query=q.tolist(), limit=10, query_filter=flt).points
            lat.append(time.perf_counter() - t)
            rec.append(recall([int(p.id) for p in res], tr))
    c.close()
    p50, p95 = pct(lat)
    return {"upsert_s": t_up, "upsert_pts_s": len(x) / t_up, "p50_ms": p50, "p95_ms": p95,
            "recall": float(np.mean(rec)), "queries": len(lat), "rss_load_mib": r1 - r0}


def run_size(n: int, args, synth: Synth) -> dict:
    """All backends at one size; prints a line per backend as it finishes."""
    t0 = time.perf_counter()
    x, anat, sub = synth.dataset(n)
    idx_of = [np.flatnonzero(anat == a) for a in range(len(SLUGS))]
    rng = np.random.default_rng(99)
    qanat = rng.integers(0, len(SLUGS), size=args.queries)
    queries, _ = synth.draw(qanat, rng)
    truth = [exact_top(x, idx_of, q, a) for q, a in zip(queries, qanat)]
    res = {"n": n, "load1_start": os.getloadavg()[0], "numpy": bench_numpy(x, idx_of, queries, qanat, truth),
           "numpy blocks": bench_numpy_blocks(x, idx_of, queries, qanat, truth)}
    show(n, "numpy exact", res["numpy"])
    show(n, "numpy blocks", res["numpy blocks"])
    variants = {"edge": EdgeOptions(hnsw_ef=args.ef)}
    if args.forced:
        variants["edge forced HNSW"] = EdgeOptions(hnsw_ef=args.ef, full_scan_threshold_kb=1, indexing_threshold_kb=1)
    for name, opts in variants.items():
        res[name] = bench_edge(x, anat, sub, queries, qanat, truth, opts, keep_exact=name == "edge")
        show(n, name, res[name])
    if n <= args.local_max:
        res["qdrant-client local"] = bench_local(x, anat, sub, queries, qanat, truth,
                                                 args.queries if n <= 10_000 else args.local_queries)
        show(n, "qdrant-client local", res["qdrant-client local"])
    res["load1_end"], res["seconds"] = os.getloadavg()[0], time.perf_counter() - t0
    return res


def show(n: int, name: str, r: dict) -> None:
    """One human-readable line per (size, backend)."""
    extra = ""
    if "build_s" in r:
        extra = (f" upsert {r['upsert_pts_s']:7.0f} pts/s build {r['build_s']:6.1f} s"
                 f" disk {r['disk_b_per_region']:5.0f} B/region ({r['disk_b_per_region_no_wal']:.0f} w/o WAL)"
                 f" RSS load +{r['rss_load_mib']:.0f} MiB, cold open +{r['rss_queried_mib']:.0f} MiB"
                 f" segments {r['segments']} path: {r['path']}; at hnsw_ef=10 recall {r['probe_ef10_recall']:.3f},"
                 f" {r['probe_ef10_inexact_share']:.0%} of queries inexact")
        if "exact_p50_ms" in r:
            extra += f" [exact=True: p50 {r['exact_p50_ms']:.2f} ms recall {r['exact_recall']:.3f}]"
    elif "upsert_s" in r:
        extra = f" upsert {r['upsert_pts_s']:7.0f} pts/s ({r['queries']} queries)"
    print(f"{n:>8} {name:20s} p50 {r['p50_ms']:8.2f} ms p95 {r['p95_ms']:8.2f} ms recall@10 {r['recall']:.3f}"
          f"{extra} load {os.getloadavg()[0]:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", type=int, default=None, help="hnsw_ef (default: Qdrant's)")
    ap.add_argument("--no-forced", dest="forced", action="store_false", help="skip the forced-HNSW variant")
    ap.add_argument("--local-max", type=int, default=100_000, help="largest size for qdrant-client local")
    ap.add_argument("--local-queries", type=int, default=10, help="qdrant-client local queries above 10k")
    args = ap.parse_args()
    print(f"cpus={os.cpu_count()} dim={args.dim} queries={args.queries} load={os.getloadavg()[0]:.2f}", flush=True)
    synth = Synth(args.dim)
    results = [run_size(n, args, synth) for n in args.sizes]
    print(json.dumps({"bench": "search_scale", "dim": args.dim, "queries": args.queries, "results": results}))


if __name__ == "__main__":
    main()
