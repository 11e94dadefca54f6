"""Encoder throughput: onnxruntime (regionmir.inference.encoder.Encoder) vs torch eager, same network, batch 64.

    .venv/bin/python bench/bench_encoder.py [--backbone resnet10-w16] [--crop-size 64] [--n 2048]

Builds the network with random weights (speed does not depend on their values), exports it
the way `regionmir train` does, and times both engines on the same crops, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from regionmir.anatomy import ALL
from regionmir.inference.encoder import Encoder
from regionmir.inference.meta import ModelMeta
from regionmir.regions import CropSpec, normalize
from regionmir.train.export import export_encoder
from regionmir.train.models import RegionEncoder


def _best_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet10-w16")
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--n", type=int, default=2048, help="crops per timed pass")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all available)")
    a = p.parse_args()
    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = CropSpec(size=a.crop_size)
    model = RegionEncoder(a.backbone, a.embedding_dim, len(ALL)).eval()
    meta = ModelMeta(model_id="", kind="encoder", input_size=spec.size, channels=1,
                     crop_context=spec.context, norm_mean=spec.mean, norm_std=spec.std,
                     anatomies=tuple(x.slug for x in ALL), embedding_dim=a.embedding_dim,
                     backbone=a.backbone, strategy="bench", archive_fingerprint="bench")
    crops = np.random.default_rng(0).random((a.n, spec.size, spec.size), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        export_encoder(model, Path(tmp) / "encoder.onnx", meta)
        enc = Encoder(tmp, device="cpu")
        ort_rate = _best_rate(lambda: enc.embed(crops, batch_size=a.batch_size), a.n, a.repeats)

    @torch.no_grad()
    def torch_pass():
        for s in range(0, a.n, a.batch_size):
            model(torch.from_numpy(normalize(crops[s : s + a.batch_size], spec)))

    torch_rate = _best_rate(torch_pass, a.n, a.repeats)
    load = os.getloadavg()[0]
    print(f"encoder {a.backbone} {spec.size}px D={a.embedding_dim}, batch {a.batch_size}, {a.n} crops, "
          f"{threads} threads, load average {load:.1f} (CPU shared with other work)")
    print(f"  onnxruntime {enc.providers[0]:<22} {ort_rate:9.0f} crops/s")
    print(f"  torch eager {'cpu':<22} {torch_rate:9.0f} crops/s")
    print(f"  ratio onnxruntime / torch: {ort_rate / torch_rate:.2f}x")
    print(json.dumps({"bench": "encoder", "backbone": a.backbone, "crop": spec.size, "dim": a.embedding_dim,
                      "batch": a.batch_size, "threads": threads, "provider": enc.providers[0],
                      "ort_crops_s": ort_rate, "torch_crops_s": torch_rate, "ratio": ort_rate / torch_rate}))


if __name__ == "__main__":
    main()
