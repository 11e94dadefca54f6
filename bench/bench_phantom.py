"""Phantom generation speed: images per second at a given size and worker count (prints numbers)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

from regionmir.phantom import generate_archive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--studies-per-patient", type=int, default=2)
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="bench_phantom_")
    t0 = os.times()
    try:
        s = generate_archive(out, seed=0, patients=args.patients,
                             studies_per_patient=args.studies_per_patient,
                             size=args.size, workers=args.workers)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    t1 = os.times()  # CPU of this process and of the (joined) worker processes
    cpu = sum(b - a for a, b in zip(t0[:4], t1[:4]))
    print(f"size={args.size} workers={args.workers} images={s['images']} "
          f"seconds={s['seconds']:.2f} images_per_s={s['images_per_s']:.1f} "
          f"cpu_s_per_image={cpu / max(1, s['images']):.3f} "
          f"cpus={os.cpu_count()} load1={os.getloadavg()[0]:.2f}")
    print(json.dumps({"bench": "phantom", "size": args.size, "workers": args.workers, "images": s["images"],
                      "seconds": s["seconds"], "images_per_s": s["images_per_s"],
                      "cpu_s_per_image": cpu / max(1, s["images"])}))


if __name__ == "__main__":
    main()
