"""`regionmir train` from the on-disk crop cache: RSS and crops/s as the archive grows.

    nice -n 10 .venv/bin/python bench/bench_train_cache.py --archive BIG_PHANTOM --films 1000 5000 20000
        [--epochs 1 --pretrain-epochs 0]

For each N a view of the first N films of --archive (whole patients, split 70/10/20 by
patient; symlinks to its files and scene graphs) is trained on with `regionmir train` in a
fresh process (default architecture, 64 px crops, --cache in a temporary folder), while this
script samples the RSS of the trainer and of its DataLoader workers every 0.2 s. Printed per N:
crops, cut seconds and crops/s (decode + crop + write the cache), training crops/s (crops
passed through the model per second, both views of a contrastive pair counted once), peak RSS
of the trainer during the cut and during training, peak RSS of a loader worker, cache size,
and what the old in-memory crop set would have held (train views float16 + held-out float32).
The last line is a JSON object with every number.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_view(src: Path, dst: Path, films: int) -> int:
    """Splits over the first ``films`` films of ``src`` (whole patients); returns the films taken."""
    paths = sorted(src.glob("files/p*/p*/s*/*.dcm"))
    by_patient: dict[str, list[Path]] = {}
    for p in paths:
        by_patient.setdefault(p.parts[-3], []).append(p)
    rows: dict[str, list] = {"train": [], "valid": [], "test": []}
    taken = 0
    for patient, files in sorted(by_patient.items()):
        if taken >= films:
            break
        h = int(hashlib.sha1(patient.encode()).hexdigest()[:8], 16) % 10
        split = "train" if h < 7 else "valid" if h < 8 else "test"
        for f in files:
            if (src / "scene_graph" / f"{f.stem}_SceneGraph.json").is_file():
                rows[split].append([f.stem, patient[1:], f.parent.name[1:], str(f.relative_to(src))])
                taken += 1
    (dst / "splits").mkdir(parents=True, exist_ok=True)
    for name in ("files", "scene_graph"):
        (dst / name).symlink_to(src / name)
    for split, r in rows.items():
        with open(dst / "splits" / f"{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["dicom_id", "subject_id", "study_id", "path"])
            w.writerows(r)
    return taken


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def train(view: Path, out: Path, cache: Path, args) -> dict:
    """Run `regionmir train --json` and sample RSS; returns the report and the RSS peaks."""
    cli = Path(sys.executable).parent / "regionmir"
    cmd = [str(cli), "train", str(view), "--out", str(out), "--cache", str(cache), "--json",
           "--strategy", "regionmir", "--epochs", str(args.epochs), "--pretrain-epochs", str(args.pretrain_epochs),
           "--loader-workers", str(args.loader_workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_cut = peak_train = peak_worker = 0.0
    t0 = time.perf_counter()
    while proc.poll() is None:
        main = rss_mib(proc.pid)
        kids = children(proc.pid)
        if kids:  # DataLoader workers exist only while training
            peak_train = max(peak_train, main)
            peak_worker = max([peak_worker, *(rss_mib(k) for k in kids)])
        elif (out / "checkpoints").exists():
            peak_train = max(peak_train, main)
        else:
            peak_cut = max(peak_cut, main)
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise RuntimeError(stderr[-3000:])
    report = json.loads(stdout)
    return {"report": report, "wall_s": time.perf_counter() - t0, "peak_rss_cut_mib": peak_cut,
            "peak_rss_train_mib": peak_train, "peak_rss_loader_worker_mib": peak_worker}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--films", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--pretrain-epochs", type=int, default=0)
    ap.add_argument("--loader-workers", type=int, default=1)
    ap.add_argument("--tmp", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-cache-", dir=args.tmp))
    results = []
    for n in args.films:
        view = tmp / f"view-{n}"
        films = make_view(args.archive.resolve(), view, n)
        load0 = os.getloadavg()[0]
        r = train(view, tmp / f"model-{n}", tmp / f"cache-{n}", args)
        rep = r.pop("report")
        cfg = rep["config"]
        passes = cfg["epochs"] + cfg["pretrain_epochs"]
        train_s = rep["results"]["regionmir"]["train_seconds"]
        views = 1 + cfg["jitter_views"]
        s = cfg["crop_size"]
        cache_bytes = sum(f.stat().st_blocks * 512 for f in (tmp / f"cache-{n}").iterdir())
        row = {"films": films, "train_images": rep["train_images"], "eval_images": rep["eval_images"],
               "train_crops": rep["train_crops"], "eval_crops": rep["eval_crops"],
               "cut_s": rep["data_seconds"], "cut_crops_s": (rep["train_crops"] + rep["eval_crops"]) / rep["data_seconds"],
               "train_s": train_s, "train_crops_s": rep["train_crops"] * passes / train_s,
               "accuracy": rep["results"]["regionmir"]["accuracy"], "cache_mib": cache_bytes / 2**20,
               "in_memory_mib": (rep["train_crops"] * views * s * s * 2 + rep["eval_crops"] * s * s * 4) / 2**20,
               "torch_threads": rep["torch_threads"], "load_start": load0, "load_end": os.getloadavg()[0], **r}
        print(f"{films:>6} films: {row['train_crops']} train + {row['eval_crops']} held-out crops; cut {row['cut_s']:.0f} s "
              f"({row['cut_crops_s']:.0f} crops/s); train {row['train_s']:.0f} s ({row['train_crops_s']:.0f} crops/s, "
              f"{passes} epoch(s), {rep['torch_threads']} threads); peak RSS cut {row['peak_rss_cut_mib']:.0f} MiB, "
              f"train {row['peak_rss_train_mib']:.0f} MiB, loader worker {row['peak_rss_loader_worker_mib']:.0f} MiB; "
              f"cache {row['cache_mib']:.0f} MiB on disk (in memory it was {row['in_memory_mib']:.0f} MiB); "
              f"accuracy {row['accuracy']:.3f}; load {load0:.1f}->{row['load_end']:.1f}", flush=True)
        results.append(row)
        shutil.rmtree(tmp / f"cache-{n}", ignore_errors=True)
    print(json.dumps({"bench": "train_cache", "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
                      "results": results}))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
