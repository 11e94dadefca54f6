"""`regionmir train` from the on-disk crop cache: memory per phase and crops/s as the archive grows.

    nice -n 10 .venv/bin/python bench/bench_train_cache.py --archive BIG_PHANTOM --films 1000 5000 20000
        [--generate] [--epochs 1 --pretrain-epochs 0] [--threads 1] [--code SRC_DIR] [--label before]

--archive is one phantom archive with at least max(--films) films; with --generate it is made
first when missing (`regionmir phantom --studies-per-patient 2 --size 256`, the cheapest size
whose crops are still the default 64 px), and kept for the next run. For each N a view of its
first N films (whole patients, split 70/10/20 by patient; symlinks to its files and scene
graphs) is trained on in a fresh process (`train.pipeline.run`, what `regionmir train` runs:
default architecture, 64 px crops, `--strategy regionmir`, --cache in a temporary folder).
`--epochs 0 --pretrain-epochs 0` only cuts and scores the untrained model (cut and eval phases,
at a fraction of the time; the eval phase is seen only in code that notes "evaluating").
--code runs another checkout's `regionmir` package (PYTHONPATH=SRC_DIR), to measure the code
before a change on the same films.

The trainer reports its phases through the `Progress` interface it already has (cut = listing the
splits and cutting the crop cache; train; eval = predicting the held-out crops and scoring them;
export), and this script samples /proc/<pid>/status of the trainer and of every process under it
(DataLoader workers) every --interval s: RssAnon (the process's own memory: what grows when
something is held), RssFile (mapped files and shared libraries: ~315-345 MiB here, mostly torch)
and VmRSS (their sum, with RssShmem). Printed per N: the peaks of each per phase for the trainer
and for the largest worker, seconds and crops/s per phase, accuracy, P@10, cache size and what the
old in-memory crop set would have held, and a hash of every score and loss (`scores_sha256`: equal
hashes, equal results, to compare code before and after a change). One JSON object per N on stdout
(JSON lines); the human-readable line goes to stderr.
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
import threading
import time
from pathlib import Path

FIELDS = ("RssAnon", "RssFile", "VmRSS")
PHASES = ("cut", "train", "eval", "export")


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


def generate(archive: Path, films: int, workers: int) -> None:
    """A phantom archive of at least ``films`` films (2 per patient, 256 px), unless one is there."""
    have = sum(1 for _ in archive.glob("files/p*/p*/s*/*.dcm")) if archive.is_dir() else 0
    if have >= films:
        return
    if archive.exists():
        raise SystemExit(f"{archive} holds {have} films, fewer than {films}: remove it or pass another --archive")
    cli = Path(sys.executable).parent / "regionmir"
    cmd = [str(cli), "phantom", str(archive), "--patients", str((films + 1) // 2), "--studies-per-patient", "2",
           "--size", "256", "--workers", str(workers), "--json"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"generated {archive}: {films} films in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- sampling /proc


def status(pid: int) -> dict[str, float]:
    """RssAnon, RssFile and VmRSS of ``pid`` in MiB (empty when it has gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in FIELDS:
                    out[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (children of all its threads, recursively)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


class Sampler(threading.Thread):
    """Peaks of FIELDS per phase, for the trainer (``main``) and its largest worker (``worker``)."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval, self.phase = pid, interval, "cut"
        self.peaks = {ph: {"main": dict.fromkeys(FIELDS, 0.0), "worker": dict.fromkeys(FIELDS, 0.0)} for ph in PHASES}
        self.samples = dict.fromkeys(PHASES, 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            phase = self.phase
            main = status(self.pid)
            if not main:
                break
            peak = self.peaks[phase]
            for k, v in main.items():
                peak["main"][k] = max(peak["main"][k], v)
            for kid in descendants(self.pid):
                for k, v in status(kid).items():
                    peak["worker"][k] = max(peak["worker"][k], v)
            self.samples[phase] += 1
            time.sleep(self.interval)


# ----------------------------------------------------------------------------- the trainer


def child(args) -> None:
    """In the trainer process: run the pipeline, print ``phase NAME T`` lines and ``report JSON``."""
    from regionmir.train.loop import TrainConfig
    from regionmir.train.pipeline import run
    from regionmir.train.progress import Progress

    def say(phase: str) -> None:
        print(f"phase {phase} {time.time():.3f}", flush=True)

    class Phases(Progress):
        training, total, seen = False, 0, 0

        def phase(self, label, total_steps, epochs, unit="crops"):
            self.training = not label.startswith("cropping")  # cropping phases count images
            self.total, self.seen = total_steps, 0
            say("train" if self.training else "cut")

        def step(self, epoch, loss, crops_per_s):
            self.seen += 1
            if self.training and self.seen == self.total:
                say("eval")  # the last step of a training phase: predicting the held-out crops follows

        def note(self, text):
            if text.startswith("evaluating"):
                say("eval")
            elif "accuracy" in text:
                say("export")

    view, out, cache = (Path(p) for p in args.child)
    cfg = TrainConfig(strategy="regionmir", epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                      threads=args.threads, loader_workers=args.loader_workers, cache=str(cache))
    say("cut")
    report = run(view, out, cfg, Phases())
    say("end")
    print("report " + json.dumps(report), flush=True)


def train(view: Path, out: Path, cache: Path, args) -> dict:
    """Run the trainer in a fresh process and sample it; returns the report, phase times and peaks."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.code:
        env["PYTHONPATH"] = str(Path(args.code).resolve())
    cmd = [sys.executable, __file__, "--child", str(view), str(out), str(cache), "--epochs", str(args.epochs),
           "--pretrain-epochs", str(args.pretrain_epochs), "--loader-workers", str(args.loader_workers),
           "--threads", str(args.threads)]
    errors = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads would stall a chatty trainer
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    sampler = Sampler(proc.pid, args.interval)
    sampler.start()
    times, report = {}, None
    for line in proc.stdout:
        kind, _, rest = line.rstrip("\n").partition(" ")
        if kind == "phase":
            name, t = rest.split()
            sampler.phase = name if name in PHASES else sampler.phase
            times.setdefault(name, float(t))  # first start of each phase
            times[name + "_last"] = float(t)
        elif kind == "report":
            report = json.loads(rest)
    proc.wait()
    errors.seek(0)
    stderr = errors.read()
    sampler.done.set()
    sampler.join()
    if proc.returncode or report is None:
        raise RuntimeError(stderr[-3000:])
    return {"report": report, "times": times, "peaks": sampler.peaks, "samples": sampler.samples}


def row_of(n_films: int, r: dict, cache: Path, load0: float, args) -> dict:
    """The JSON line of one archive size."""
    rep, t = r["report"], r["times"]
    cfg, res = rep["config"], rep["results"]["regionmir"]
    passes = cfg["epochs"] + cfg["pretrain_epochs"]
    crops = rep["train_crops"] + rep["eval_crops"]
    s, views = cfg["crop_size"], 1 + cfg["jitter_views"]
    # with --epochs 0 --pretrain-epochs 0 nothing trains: the run cuts, then scores the untrained model
    seconds = {"cut": t.get("train", t["eval"]) - t["cut"], "eval": t["export"] - t["eval_last"],
               "export": t["end"] - t["export"]}
    return {
        "bench": "train_cache", "label": args.label, "code": str(args.code or "this checkout"), "films": n_films,
        "train_images": rep["train_images"], "eval_images": rep["eval_images"],
        "train_crops": rep["train_crops"], "eval_crops": rep["eval_crops"],
        "cut_s": seconds["cut"], "cut_crops_s": crops / seconds["cut"],
        "train_s": res["train_seconds"],
        "train_crops_s": rep["train_crops"] * passes / res["train_seconds"] if passes else None,
        "eval_s": seconds["eval"], "eval_crops_s": rep["eval_crops"] / seconds["eval"], "export_s": seconds["export"],
        "accuracy": res["accuracy"], "precision_at_10": res["precision_at_10"], "loss_history": res["loss_history"],
        "scores_sha256": hashlib.sha256(json.dumps({k: v for k, v in res.items() if k != "train_seconds"},
                                                   sort_keys=True).encode()).hexdigest()[:16],
        "cache_mib": sum(f.stat().st_blocks * 512 for f in cache.iterdir() if f.is_file()) / 2**20,
        "in_memory_mib": (rep["train_crops"] * views * s * s * 2 + rep["eval_crops"] * s * s * 4) / 2**20,
        "torch_threads": rep["torch_threads"], "epochs": cfg["epochs"], "pretrain_epochs": cfg["pretrain_epochs"],
        "load_start": load0, "load_end": os.getloadavg()[0],
        "peak_mib": {ph: {who: {k: round(v, 1) for k, v in d.items()} for who, d in p.items()}
                     for ph, p in r["peaks"].items()},
        "samples": r["samples"],
    }


def say(row: dict) -> None:
    p = row["peak_mib"]
    anon = " / ".join(f"{p[ph]['main']['RssAnon']:.0f}" for ph in ("cut", "train", "eval"))
    vm = " / ".join(f"{p[ph]['main']['VmRSS']:.0f}" for ph in ("cut", "train", "eval"))
    print(f"[{row['label']}] {row['films']:>6} films: {row['train_crops']} train + {row['eval_crops']} held-out crops; "
          f"RssAnon peak cut / train / eval {anon} MiB (VmRSS {vm}), loader worker RssAnon "
          f"{p['train']['worker']['RssAnon']:.0f} MiB; cut {row['cut_s']:.0f} s ({row['cut_crops_s']:.0f} crops/s), "
          f"train {row['train_s']:.0f} s ({row['train_crops_s'] or 0:.0f} crops/s), eval {row['eval_s']:.1f} s "
          f"({row['eval_crops_s']:.0f} crops/s); accuracy {row['accuracy']:.4f}, P@10 {row['precision_at_10']:.4f}; "
          f"cache {row['cache_mib']:.0f} MiB; load {row['load_start']:.1f}->{row['load_end']:.1f}",
          file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", type=Path, help="phantom archive with at least max(--films) films")
    ap.add_argument("--generate", action="store_true", help="make --archive first when it is missing")
    ap.add_argument("--phantom-workers", type=int, default=1)
    ap.add_argument("--films", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--pretrain-epochs", type=int, default=0)
    ap.add_argument("--loader-workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the trainer")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between /proc samples")
    ap.add_argument("--code", type=Path, default=None, help="run the regionmir package of this source folder")
    ap.add_argument("--label", default="", help="a name for the rows (before, after)")
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--keep-cache", action="store_true", help="leave the caches and models in --tmp")
    ap.add_argument("--child", nargs=3, metavar=("VIEW", "OUT", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.archive is None:
        ap.error("--archive is required")
    if args.generate:
        generate(args.archive, max(args.films), args.phantom_workers)
    if args.tmp:
        args.tmp.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-cache-", dir=args.tmp))
    for n in args.films:
        view = tmp / f"view-{n}"
        films = make_view(args.archive.resolve(), view, n)
        load0 = os.getloadavg()[0]
        r = train(view, tmp / f"model-{n}", tmp / f"cache-{n}", args)
        row = row_of(films, r, tmp / f"cache-{n}", load0, args)
        say(row)
        print(json.dumps(row), flush=True)
        if not args.keep_cache:
            shutil.rmtree(tmp / f"cache-{n}", ignore_errors=True)
    if not args.keep_cache:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
