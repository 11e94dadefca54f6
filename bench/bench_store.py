"""Store speed: one qdrant-edge shard with an anatomy filter vs one shard per anatomy.

Synthetic unit vectors with a cluster structure like region embeddings: 36 anatomy centres,
sub-clusters (cases) inside each anatomy, Gaussian noise. Prints upsert throughput, optimize
(HNSW build) time, disk size, filtered query latency p50/p95 and recall@10 against numpy exact
search, and qdrant-client local-mode latency for comparison. Run with ``nice -n 10``:

    .venv/bin/python bench/bench_store.py --n 100000 --dim 128 512
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from regionmir.anatomy import ALL
from regionmir.store.base import PAYLOAD_INDEXES, point_id

SLUGS = [a.slug for a in ALL]


def make_data(n: int, dim: int, seed: int = 0, subclusters: int = 40):
    """(n, dim) unit vectors, anatomy index per point, and payloads like real region points."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(SLUGS), dim))  # (36, dim)
    subs = rng.normal(size=(len(SLUGS), subclusters, dim))  # (36, S, dim)
    anat = np.arange(n) % len(SLUGS)  # (n,)
    sub = rng.integers(0, subclusters, size=n)
    x = 1.0 * centres[anat] + 0.6 * subs[anat, sub] + 0.5 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # (n, dim)
    payloads = []
    for i in range(n):
        img = i // len(SLUGS)
        payloads.append({
            "anatomy": SLUGS[anat[i]], "image_id": f"img{img}", "study_id": f"st{img // 2}",
            "patient": f"pt-{img // 5:016x}", "view": "PA" if img % 3 else "AP", "modality": "CR",
            "box": [1, 2, 30, 40], "path": f"p10/p{img}/s{img}.dcm", "model_id": "bench",
            "findings": ["effusion"] if sub[i] % 7 == 0 else [], "box_source": "annotation",
            "confidence": None,
        })
    return x, anat, payloads


def new_shard(path: Path, dim: int, forced: bool, design: str = "one") -> qe.EdgeShard:
    """A shard configured like EmbeddedStore; ``forced`` lowers thresholds so HNSW is used.

    Designs: "one"/"per": one global graph (m=16), payload indexes as in EmbeddedStore.
    "one-lean": the same, but only the anatomy index adds graph links (enable_hnsw=False on
    the others). "tenant": Qdrant's multitenancy layout: no global graph (m=0), one graph per
    anatomy (payload_m=16, anatomy ``is_tenant``), no graph links for the other fields.
    """
    tenant, lean = design == "tenant", design in ("tenant", "one-lean")
    hnsw = qe.HnswIndexConfig(m=0 if tenant else 16, ef_construct=100,
                              full_scan_threshold=10 if forced else 10_000,
                              payload_m=16 if tenant else None)
    opt = qe.EdgeOptimizersConfig(indexing_threshold=10) if forced else None
    cfg = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                        hnsw_config=hnsw, optimizers=opt, wal_enabled=True)
    shard = qe.EdgeShard.create(str(path), cfg)
    for key in PAYLOAD_INDEXES:
        if key == "anatomy":
            schema = qe.KeywordIndexParams(is_tenant=tenant or None)
        else:
            schema = qe.KeywordIndexParams(enable_hnsw=False) if lean else qe.PayloadSchemaType.Keyword
        shard.update(qe.UpdateOperation.create_field_index(key, schema))
    return shard


def disk_bytes(path: Path) -> tuple[int, int]:
    """(allocated bytes, allocated bytes without the WAL) under ``path``."""
    total = no_wal = 0
    for root, _, files in os.walk(path):
        for f in files:
            b = os.stat(os.path.join(root, f)).st_blocks * 512
            total += b
            no_wal += 0 if "wal" in Path(root).parts else b
    return total, no_wal


def load(shards: dict[str, qe.EdgeShard], x, anat, payloads, per_anatomy: bool) -> float:
    """Upsert everything in batches of 512; returns seconds."""
    t = time.perf_counter()
    for start in range(0, len(x), 512):
        groups: dict[str, list] = {}
        for i in range(start, min(start + 512, len(x))):
            key = SLUGS[anat[i]] if per_anatomy else "all"
            pid = point_id(str(i), SLUGS[anat[i]], "bench")
            groups.setdefault(key, []).append(qe.Point(pid, x[i].tolist(), payloads[i]))
        for key, pts in groups.items():
            shards[key].update(qe.UpdateOperation.upsert_points(pts))
    return time.perf_counter() - t


def run_design(x, anat, payloads, design: str, forced: bool, queries, qanat, truth, ef):
    """Build one design (see :func:`new_shard`) in a temp folder and print its numbers."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    per_anatomy = design == "per"
    keys = SLUGS if per_anatomy else ["all"]
    shards = {k: new_shard(tmp / k, x.shape[1], forced, design) for k in keys}
    t_up = load(shards, x, anat, payloads, per_anatomy)
    t = time.perf_counter()
    for s in shards.values():
        s.optimize()
        s.flush()
    t_opt = time.perf_counter() - t
    indexed = sum(s.info().indexed_vectors_count for s in shards.values())
    lat, rec = [], []
    for q, a, true_ids in zip(queries, qanat, truth):
        slug = SLUGS[a]
        flt = None if per_anatomy else qe.Filter(must=[qe.FieldCondition("anatomy", match=qe.MatchValue(slug))])
        req = qe.QueryRequest(limit=10, query=qe.Query.Nearest(q.tolist()), filter=flt,
                              params=qe.SearchParams(hnsw_ef=ef), with_payload=True)
        t = time.perf_counter()
        hits = shards[slug if per_anatomy else "all"].query(req)
        lat.append(time.perf_counter() - t)
        rec.append(len({str(h.id) for h in hits} & true_ids) / 10)
    for s in shards.values():
        s.close()
    total, no_wal = disk_bytes(tmp)
    shutil.rmtree(tmp)
    n = len(x)
    label = {"one": "one shard + filter", "one-lean": "one shard + filter, lean indexes",
             "per": "per-anatomy shards", "tenant": "one shard, anatomy tenant"}
    name = label[design] + (" [forced HNSW]" if forced else "")
    print(f"  {name:38s} upsert {n / t_up:8.0f} pts/s ({t_up:5.1f} s)  optimize {t_opt:6.1f} s  "
          f"indexed {indexed:6d}  disk {total / 2**20:6.1f} MiB ({no_wal / n:5.0f} B/pt w/o WAL)  "
          f"query p50 {np.percentile(lat, 50) * 1e3:6.2f} ms p95 {np.percentile(lat, 95) * 1e3:6.2f} ms  "
          f"recall@10 {np.mean(rec):.3f}", flush=True)
    return {"design": name, "upsert_pts_s": n / t_up, "optimize_s": t_opt, "indexed": indexed,
            "disk_mib": total / 2**20, "b_per_pt_no_wal": no_wal / n, "p50_ms": float(np.percentile(lat, 50)) * 1e3,
            "p95_ms": float(np.percentile(lat, 95)) * 1e3, "recall": float(np.mean(rec))}


def exact_truth(x, anat, queries, qanat) -> list[set[str]]:
    """Brute-force top-10 ids within the query's anatomy (numpy)."""
    truth = []
    for q, a in zip(queries, qanat):
        idx = np.flatnonzero(anat == a)
        top = idx[np.argsort(-(x[idx] @ q))[:10]]
        truth.append({point_id(str(i), SLUGS[a], "bench") for i in top})
    return truth


def bench_local(dim: int, n: int = 10_000, nq: int = 100) -> None:
    """qdrant-client local mode (pure Python) filtered query latency, for comparison."""
    import warnings

    from qdrant_client import QdrantClient, models

    x, anat, payloads = make_data(n, dim, seed=1)
    c = QdrantClient(location=":memory:")
    c.create_collection("b", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
    t = time.perf_counter()
    for s in range(0, n, 512):
        c.upsert("b", [models.PointStruct(id=str(uuid.uuid4()), vector=x[i].tolist(), payload=payloads[i])
                       for i in range(s, min(s + 512, n))])
    t_up = time.perf_counter() - t
    lat = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(nq):
            flt = models.Filter(must=[models.FieldCondition(key="anatomy", match=models.MatchValue(value=SLUGS[j % 36]))])
            t = time.perf_counter()
            c.query_points("b", query=x[j].tolist(), limit=10, query_filter=flt)
            lat.append(time.perf_counter() - t)
    print(f"  qdrant-client local mode, {n} pts: upsert {n / t_up:8.0f} pts/s  "
          f"query p50 {np.percentile(lat, 50) * 1e3:6.2f} ms p95 {np.percentile(lat, 95) * 1e3:6.2f} ms", flush=True)
    return {"design": f"qdrant-client local {n}", "upsert_pts_s": n / t_up,
            "p50_ms": float(np.percentile(lat, 50)) * 1e3, "p95_ms": float(np.percentile(lat, 95)) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", type=int, default=None, help="hnsw_ef (default: Qdrant's)")
    ap.add_argument("--forced", action="store_true", help="also run with HNSW forced on small sets")
    ap.add_argument("--designs", nargs="+", default=["one", "one-lean", "tenant", "per"],
                    choices=["one", "one-lean", "tenant", "per"])
    ap.add_argument("--local", action="store_true", help="also time qdrant-client local mode at 10k")
    args = ap.parse_args()
    print(f"cpus={os.cpu_count()} n={args.n} queries={args.queries} ef={args.ef}", flush=True)
    rows = []
    for dim in args.dim:
        x, anat, payloads = make_data(args.n, dim)
        rng = np.random.default_rng(99)
        pick = rng.integers(0, args.n, size=args.queries)
        queries = x[pick] + 0.3 * rng.normal(size=(args.queries, dim)).astype(np.float32) / np.sqrt(dim)
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        qanat = anat[pick]
        truth = exact_truth(x, anat, queries, qanat)
        print(f"dim {dim}:", flush=True)
        for forced in [False, True] if args.forced else [False]:
            for design in args.designs:
                rows.append({"dim": dim, **run_design(x, anat, payloads, design, forced, queries, qanat, truth, args.ef)})
        if args.local:
            rows.append({"dim": dim, **bench_local(dim)})
    print(json.dumps({"bench": "store", "n": args.n, "rows": rows}))


if __name__ == "__main__":
    main()
