"""The embedded store at MIMIC-CXR scale: memory, disk, build time, filtered latency, recall, cold CLI.

    nice -n 10 .venv/bin/python bench/bench_search_scale.py --sizes 1000000 4000000 [--variants int8-disk float-ram]

Synthetic 128-d unit vectors shaped like region embeddings: 36 anatomy centres, sub-clusters
(cases) inside each anatomy, Gaussian noise; realistic payloads (one image = 36 regions).
Queries are fresh draws from the same model (not stored points). For each size and store
variant (``VARIANTS``: quantization, where vectors and graphs live, segment size) it builds a
collection with ``regionmir.store.EmbeddedStore`` exactly as `regionmir ingest` does (batched
upserts, ``build_index`` every ``segment_points`` points and at the end) and measures:

- build: upsert and index build seconds, disk bytes per region, peak anonymous memory of the
  building process above what it held before (the vectors the bench keeps are not counted);
- in a fresh process: ``open_s`` and ``rss_open_mib`` (RSS growth after opening), RSS after one
  query per anatomy, filtered (one anatomy) top-10 p50/p95 and recall@10 against exact numpy,
  and the same with ``exact=True`` (the per-anatomy exact scan) and at other search breadths
  (``--ef``); the first pass meets a cold page cache, so the default breadth runs again last
  (``ann_warm``: a search process that has been answering for a while);
- cold CLI: wall time of new ``regionmir search --anatomy left-lung query.dcm`` processes on
  that store (median of --cli-runs; decode, localizer and encoder included).

One JSON line per (size, variant) as it finishes; the last line is a JSON object with all.
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
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest import default_model  # noqa: E402
from bench_search_cli import add_localizer, cold_runs, held_out_archive  # noqa: E402
from bench_store import disk_bytes  # noqa: E402

from regionmir.anatomy import ALL  # noqa: E402
from regionmir.store.base import PointRecord  # noqa: E402
from regionmir.store.embedded import EdgeOptions, EmbeddedStore  # noqa: E402

SLUGS = [a.slug for a in ALL]
BATCH = 4096  # points per EmbeddedStore.upsert call
COLLECTION = "regions"
VARIANTS = {  # name -> EdgeOptions of the collection
    "int8-disk": EdgeOptions(quantization="int8", vectors_on_disk=True),  # the default (2M-point segments)
    "int8-disk-one-segment": EdgeOptions(quantization="int8", vectors_on_disk=True, segment_points=None),
    "binary-disk": EdgeOptions(quantization="binary", vectors_on_disk=True, oversampling=4.0),
    "float-ram": EdgeOptions(quantization="none", vectors_on_disk=False),  # the layout before
    "int8-disk-graph-disk": EdgeOptions(quantization="int8", vectors_on_disk=True, hnsw_on_disk=True),
    "int8-all-disk": EdgeOptions(quantization="int8", vectors_on_disk=True, hnsw_on_disk=True,
                                 quantized_on_disk=True),
    "int8-disk-indexes-disk": EdgeOptions(quantization="int8", vectors_on_disk=True, indexes_on_disk=True),
    "float-ram-indexes-disk": EdgeOptions(quantization="none", vectors_on_disk=False, indexes_on_disk=True),
}


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


def image_fields(img: int, model_id: str) -> dict:
    """The fields of image ``img``, shared by its 36 region points (no patient data: synthetic ids)."""
    return {"image_id": f"img{img:07d}", "study_id": f"st{img // 2:07d}", "patient": f"pt-{img // 5:016x}",
            "view": "PA" if img % 3 else "AP", "modality": "CR", "path": f"files/p10/*/s{img // 2}/{img}.dcm",
            "model_id": model_id, "box_source": "annotation"}


def region_fields(a: int, sub: int) -> dict:
    """The fields of one region point, as `regionmir ingest` writes them."""
    return {"anatomy": SLUGS[a], "box": [12.0, 40.0, 300.0, 420.0],
            "findings": ["pleural effusion"] if sub % 7 == 0 else [], "confidence": None}


def points(x, anat, sub, start: int, stop: int, model_id: str) -> list[PointRecord]:
    """Points ``start:stop`` (one image = 36 consecutive regions, its fields given once, as ingest does)."""
    images: dict[int, dict] = {}
    out = []
    for i in range(start, stop):
        img = i // len(SLUGS)
        if img not in images:
            images[img] = image_fields(img, model_id)
        out.append(PointRecord(str(uuid.UUID(int=i)), x[i], region_fields(anat[i], sub[i]), images[img]))
    return out


def status_mib(field: str = "VmRSS") -> float:
    """A memory field of /proc/self/status in MiB: VmRSS (resident), RssAnon (held by the process itself)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    """Resident set size of this process in MiB."""
    return status_mib("VmRSS")


def pct(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def exact_top(x, idx_of, q, a, k: int = 10) -> np.ndarray:
    """Exact top-k point indices within anatomy ``a``."""
    idx = idx_of[a]
    s = x[idx] @ q  # (n_a,)
    part = np.argpartition(-s, k)[:k]
    return idx[part[np.argsort(-s[part])]]


MEASURE = """
import dataclasses, json, sys, time, uuid
import numpy as np
sys.path.insert(0, {bench!r})
from bench_search_scale import rss_mib, SLUGS
from regionmir.store.base import Filter
from regionmir.store.embedded import EmbeddedStore
data = np.load({queries!r})
queries, qanat = data["q"], data["a"]
r0 = rss_mib(); t = time.perf_counter()
s = EmbeddedStore({store!r}); n = s.count({name!r})
open_s, rss_open = time.perf_counter() - t, rss_mib() - r0
t = time.perf_counter(); s.search({name!r}, queries[0], 10, Filter(must={{"anatomy": SLUGS[0]}}))
first_ms = (time.perf_counter() - t) * 1000
for a in SLUGS:
    s.search({name!r}, queries[0], 10, Filter(must={{"anatomy": a}}))
rss_queried = rss_mib() - r0
out = {{"points": n, "open_s": open_s, "rss_open_mib": rss_open, "first_query_ms": first_ms}}
default = s.options
# "ann" runs first, on whatever the page cache holds (a fresh search process after a reboot
# or a build); "ann_warm" repeats it last, after every other pass has read the store
for kind, ef in [("ann", None), ("exact", None)] + [(f"ef{{ef}}", ef) for ef in {efs!r}] + [("ann_warm", None)]:
    s.options = dataclasses.replace(default, hnsw_ef=ef) if ef else default
    lat, ids = [], []
    for q, a in zip(queries, qanat):
        t = time.perf_counter()
        hits = s.search({name!r}, q, 10, Filter(must={{"anatomy": SLUGS[a]}}), exact=kind == "exact")
        lat.append((time.perf_counter() - t) * 1000)
        ids.append([uuid.UUID(h.id).int for h in hits])
    out[kind] = {{"ms": lat, "ids": ids}}
s.options = default
out["rss_queried_mib"] = rss_queried
out["rss_after_mib"] = rss_mib() - r0
print(json.dumps(out))
"""


def measure(store: Path, queries, qanat, tmp: Path, efs: tuple[int, ...] = ()) -> dict:
    """Open the store in a fresh process and query it there (what a new search process sees);
    also at each HNSW search breadth of ``efs``."""
    qfile = tmp / "queries.npz"
    np.savez(qfile, q=queries, a=qanat)
    code = MEASURE.format(bench=str(Path(__file__).parent), queries=str(qfile), store=str(store), name=COLLECTION,
                          efs=tuple(efs))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


class AnonPeak:
    """Peak RssAnon (MiB) of this process, sampled every 0.5 s while the block runs."""

    def __enter__(self):
        import threading

        self.peak, self._stop = status_mib("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, status_mib("RssAnon"))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_mib("RssAnon"))


def build(home: Path, x, anat, sub, opts: EdgeOptions, model_id: str) -> dict:
    """Fill and index a collection as `regionmir ingest` does (an index build every segment and
    at the end); returns timings and memory growth."""
    r0, a0 = rss_mib(), status_mib("RssAnon")
    store = EmbeddedStore(home / "store", opts)
    store.create_collection(COLLECTION, x.shape[1], {"model_id": model_id})  # the store records dim
    every, since, upsert_s, build_s, builds = store.index_every(COLLECTION), 0, 0.0, 0.0, 0
    with AnonPeak() as peak:
        for s in range(0, len(x), BATCH):
            t = time.perf_counter()
            store.upsert(COLLECTION, points(x, anat, sub, s, min(s + BATCH, len(x)), model_id))
            upsert_s += time.perf_counter() - t
            since += min(BATCH, len(x) - s)
            if (every and since >= every) or s + BATCH >= len(x):
                t = time.perf_counter()
                store.build_index(COLLECTION)
                build_s, builds, since = build_s + time.perf_counter() - t, builds + 1, 0
    info = store._shard(COLLECTION).info()
    rss_build = rss_mib() - r0
    store.close()
    total, no_wal = disk_bytes(home / "store")
    return {"upsert_s": upsert_s, "upsert_pts_s": len(x) / upsert_s, "build_s": build_s, "index_builds": builds,
            "segment_points": every, "segments": info.segments_count, "indexed": info.indexed_vectors_count,
            "disk_mib": total / 2**20, "disk_b_per_region": total / len(x),
            "disk_b_per_region_no_wal": no_wal / len(x), "rss_build_mib": rss_build,
            "anon_peak_build_mib": peak.peak - a0}


def scored(m: dict, efs, truth: list[list[int]]) -> dict:
    """p50 / p95 ms and recall@10 against ``truth`` of each pass ``measure`` made."""
    out = {}
    for kind in ("ann", "exact", *(f"ef{ef}" for ef in efs), "ann_warm"):
        p50, p95 = pct(m[kind]["ms"])
        rec = float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(m[kind]["ids"], truth)]))
        out[kind] = {"p50_ms": p50, "p95_ms": p95, "recall": rec}
    return out


def run_variant(n, name, x, anat, sub, queries, qanat, truth, numpy_ms, ctx, args) -> dict:
    """Build, measure and CLI-time one store variant at one size."""
    home = ctx["tmp"] / f"home-{n}-{name}"
    load0 = os.getloadavg()[0]
    res = {"n": n, "variant": name, "load_start": load0, **build(home, x, anat, sub, VARIANTS[name], ctx["model_id"])}
    m = measure(home / "store", queries, qanat, ctx["tmp"], args.ef)
    res.update(scored(m, args.ef, [t.tolist() for t in truth]))
    res.update({k: m[k] for k in ("open_s", "rss_open_mib", "rss_queried_mib", "rss_after_mib", "first_query_ms")})
    res["numpy_p50_ms"] = numpy_ms
    os.environ["REGIONMIR_HOME"] = str(home)
    runs = cold_runs(ctx["query"], ctx["model"], args.cli_runs)
    res["cli_wall_s"] = float(np.median([r["wall"] for r in runs]))
    res["cli_split_ms"] = {k: round(1000 * float(np.median([r.get(k, 0.0) for r in runs])), 1)
                           for k in ("startup+imports", "open_store", "model_wait", "decode", "localize", "encode", "query", "close+exit")}
    res["load_end"] = os.getloadavg()[0]
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    return res


def show(r: dict) -> None:
    a, e = r["ann"], r["exact"]
    print(f"{r['n']:>9,} {r['variant']:22s} upsert {r['upsert_s']:6.0f} s build {r['build_s']:6.0f} s "
          f"({r['index_builds']} builds, {r['segments']} segments, peak +{r['anon_peak_build_mib']:.0f} MiB anon) "
          f"disk {r['disk_b_per_region']:5.0f} B/region | open {r['open_s']:.2f} s RSS +{r['rss_open_mib']:.0f} MiB "
          f"(+{r['rss_after_mib']:.0f} after queries) | ann p50 {a['p50_ms']:.2f} p95 {a['p95_ms']:.2f} ms "
          f"recall {a['recall']:.3f} (again, warm: p50 {r['ann_warm']['p50_ms']:.2f} p95 {r['ann_warm']['p95_ms']:.2f}) | " + "".join(f"ef {k[2:]}: p50 {v['p50_ms']:.2f} recall {v['recall']:.3f} | "
                                                     for k, v in r.items() if k.startswith("ef") and isinstance(v, dict)) +
          f"exact p50 {e['p50_ms']:.2f} ms recall {e['recall']:.3f} | numpy "
          f"{r['numpy_p50_ms']:.2f} ms | cold CLI {r['cli_wall_s']:.2f} s | load {r['load_start']:.1f}->{r['load_end']:.1f}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--variants", nargs="+", default=["int8-disk"], choices=sorted(VARIANTS))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cli-runs", type=int, default=3)
    ap.add_argument("--ef", type=int, nargs="*", default=[64, 256],
                    help="HNSW search breadths to measure besides the store's default (128)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    ap.add_argument("--reopen", type=Path, default=None, metavar="STORE",
                    help="only measure a store kept by an earlier --keep run (its home-N-VARIANT/store folder) in a "
                         "fresh process; recall is against that store's exact search")
    args = ap.parse_args()
    if args.reopen:
        return reopen(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp))
    os.environ.pop("QDRANT_URL", None)
    print(f"cpus={os.cpu_count()} dim={args.dim} queries={args.queries} load={os.getloadavg()[0]:.2f} tmp={tmp}", flush=True)
    model = default_model(tmp / "model")
    add_localizer(model)
    query = held_out_archive(tmp / "archive", tmp / "query", 1024)
    from regionmir.inference.encoder import load_encoder

    ctx = {"tmp": tmp, "model": model, "model_id": load_encoder(model).model_id, "query": query}
    synth, results = Synth(args.dim), []
    for n in args.sizes:
        x, anat, sub = synth.dataset(n)
        idx_of = [np.flatnonzero(anat == a) for a in range(len(SLUGS))]
        rng = np.random.default_rng(99)
        qanat = rng.integers(0, len(SLUGS), size=args.queries)
        queries, _ = synth.draw(qanat, rng)
        lat, truth = [], []
        for q, a in zip(queries, qanat):
            t = time.perf_counter()
            truth.append(exact_top(x, idx_of, q, a))
            lat.append((time.perf_counter() - t) * 1000)
        for name in args.variants:
            r = run_variant(n, name, x, anat, sub, queries, qanat, truth, pct(lat)[0], ctx, args)
            show(r)
            print(json.dumps({"bench": "search_scale_row", **r}), flush=True)
            results.append(r)
        del x, anat, sub, idx_of
    print(json.dumps({"bench": "search_scale", "dim": args.dim, "queries": args.queries, "results": results}))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def reopen(args) -> None:
    """Measure a kept store again (after a reboot, or with nothing else holding memory)."""
    rng = np.random.default_rng(99)  # the queries of the run that built it
    qanat = rng.integers(0, len(SLUGS), size=args.queries)
    queries, _ = Synth(args.dim).draw(qanat, rng)
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(args.reopen, queries, qanat, Path(tmp), args.ef)
    row = {"bench": "search_scale_reopen", "store": str(args.reopen), "points": m["points"],
           "recall_against": "the store's exact search (exact=True)",
           **{k: m[k] for k in ("open_s", "rss_open_mib", "rss_queried_mib", "rss_after_mib", "first_query_ms")},
           **scored(m, args.ef, m["exact"]["ids"])}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
