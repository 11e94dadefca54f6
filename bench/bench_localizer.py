"""Localizer latency on this machine (onnxruntime, CPU unless a GPU is really usable).

    nice -n 10 .venv/bin/python bench/bench_localizer.py MODEL_DIR [--repeat 50]

onnxruntime uses its default thread pool (one thread per core). Prints, per input size, the milliseconds of the letterbox (resize + pad), of the network and of
``Localizer.locate`` end to end (decode excluded), median and 90th percentile, plus the batch
throughput of the network alone. Uses a real CR from pydicom-data (RG1_UNCR.dcm, 1955x1841) when
it is installed, and random films of common sizes otherwise. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def timed(fn, repeat: int) -> tuple[float, float]:
    """Median and p90 of ``fn()`` in milliseconds after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times)), float(np.percentile(times, 90))


def films() -> dict[str, np.ndarray]:
    """Inputs to time: the real CR when available, plus random films of MIMIC-like sizes."""
    rng = np.random.default_rng(0)
    out = {"512x512": rng.uniform(0, 1, (512, 512)).astype(np.float32),
           "3056x2544": rng.uniform(0, 1, (3056, 2544)).astype(np.float32)}
    try:
        import pydicom.data

        from regionmir.dicom import read_image

        out["RG1_UNCR 1955x1841"] = read_image(pydicom.data.get_testdata_file("RG1_UNCR.dcm")).pixels
    except Exception as e:  # pydicom-data is a test extra
        print(f"(real CR unavailable: {e})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model folder or localizer.onnx")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    from regionmir.inference.localizer import Localizer, letterbox

    loc = Localizer(args.model)
    print(f"model {loc.model_id} size {loc.size} providers {loc.providers} cpus {os.cpu_count()}")
    rows = []
    for name, image in films().items():
        lb = timed(lambda: letterbox(image, loc.size), args.repeat)
        canvas = letterbox(image, loc.size)[0][None]
        net = timed(lambda: loc.predict(canvas), args.repeat)
        e2e = timed(lambda: loc.locate(image), args.repeat)
        rows.append({"input": name, "letterbox_ms": lb, "network_ms": net, "locate_ms": e2e})
        print(f"{name:>20}: letterbox {lb[0]:6.1f} ms (p90 {lb[1]:.1f})  network {net[0]:6.1f} ms "
              f"(p90 {net[1]:.1f})  locate {e2e[0]:6.1f} ms (p90 {e2e[1]:.1f})")
    batch = np.repeat(canvas, 32, axis=0)
    med, _ = timed(lambda: loc.predict(batch), max(3, args.repeat // 10))
    print(f"network batch 32: {med:.1f} ms = {32000 / med:.0f} images/s")
    print(json.dumps({"model_id": loc.model_id, "rows": rows, "batch32_ms": med}))


if __name__ == "__main__":
    main()
