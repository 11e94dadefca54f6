"""Ingest throughput vs encoder-only throughput on the same crops, in the same run.

    .venv/bin/python bench/bench_ingest.py [--archive DIR] [--model DIR] [--patients 12] [--size 1024]

Without --archive a phantom archive is generated in a temporary folder; without --model an
untrained encoder of the default architecture (resnet10-w16, 64 px crops, 128-d: the cost of
a trained one) is exported there (needs torch; the ingest itself does not use it).

Prints images/s and regions/s of `run_ingest` (streaming part, and with the final HNSW index
build), the encoder-only regions/s on exactly the crops the ingest made, and their ratio
(target >= 0.8: decode, crop and upsert hide behind the encoder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def default_model(out: Path, backbone: str = "resnet10-w16") -> Path:
    """Export an untrained encoder with `regionmir train`'s default architecture (or ``backbone``)."""
    import torch

    from regionmir.anatomy import Anatomy
    from regionmir.modelmeta import ModelMeta
    from regionmir.train.export import export_encoder
    from regionmir.train.models import RegionEncoder

    torch.manual_seed(0)
    meta = ModelMeta("", "encoder", 64, 1, 0.1, 0.5, 0.25, tuple(a.slug for a in Anatomy), 128,
                     backbone, "scratch", "bench")
    export_encoder(RegionEncoder(backbone, 128), out / "encoder.onnx", meta)
    return out


def encoder_only(archive: Path, model: Path, batch_size: int) -> tuple[int, float]:
    """(regions, seconds) for encoding, in one process, the crops the ingest encodes."""
    from regionmir.archive import Archive
    from regionmir.encoder import load_encoder
    from regionmir.pipeline import Prepared, Preparer, plan

    encoder = load_encoder(model)
    tasks, _ = plan(Archive(archive))
    prep = Preparer(Path(archive), encoder.spec)
    crops = np.concatenate([p.crops for p in map(prep, tasks) if isinstance(p, Prepared)])  # (N, S, S)
    encoder.embed(crops[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    encoder.embed(crops, batch_size)
    return len(crops), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="resnet10-w16", help="architecture of the untrained model (no --model)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    os.environ["REGIONMIR_HOME"] = str(tmp / "home")
    os.environ.pop("QDRANT_URL", None)
    archive = args.archive
    if archive is None:
        from regionmir.phantom import generate_archive

        archive = tmp / "archive"
        t = time.perf_counter()
        generate_archive(archive, seed=0, patients=args.patients, studies_per_patient=args.studies,
                         size=args.size, workers=args.workers)
        print(f"phantom archive: {args.patients * args.studies} images at {args.size} px "
              f"({time.perf_counter() - t:.1f} s to generate)")
    model = args.model or default_model(tmp / "model", args.backbone)

    from regionmir.encoder import load_encoder
    from regionmir.ingest import IngestConfig, run_ingest

    enc = load_encoder(model)
    print(f"model {enc.model_id}: {enc.meta.backbone}, {enc.spec.size} px crops, {enc.dim}-d, {enc.providers[0]}")
    s = run_ingest(IngestConfig(archive, model, workers=args.workers, batch_size=args.batch_size))
    stream = s.seconds - s.index_seconds
    n, enc_s = encoder_only(archive, model, args.batch_size)
    assert n == s.regions, (n, s.regions)
    ingest_rate, encoder_rate = s.regions / stream, n / enc_s
    print(f"ingest:       {s.ingested} images, {s.regions} regions in {stream:.2f} s  "
          f"-> {s.ingested / stream:.2f} images/s, {ingest_rate:.1f} regions/s "
          f"(workers={args.workers}, batch={args.batch_size})")
    print(f"  with index: {s.seconds:.2f} s ({s.index_seconds:.2f} s build_index) "
          f"-> {s.ingested / s.seconds:.2f} images/s, {s.regions / s.seconds:.1f} regions/s")
    print(f"encoder only: {n} crops in {enc_s:.2f} s -> {encoder_rate:.1f} regions/s")
    print(f"ratio ingest/encoder: {ingest_rate / encoder_rate:.2f} (target >= 0.8)")
    print(json.dumps({"bench": "ingest", "images": s.ingested, "regions": s.regions, "workers": args.workers,
                      "ingest_regions_s": ingest_rate, "ingest_images_s": s.ingested / stream,
                      "with_index_regions_s": s.regions / s.seconds, "index_s": s.index_seconds,
                      "encoder_regions_s": encoder_rate, "ratio": ingest_rate / encoder_rate}))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
