"""Ingest throughput against the machine's floor, measured on the same films in the same run.

    nice -n 10 .venv/bin/python bench/bench_ingest.py [--archive DIR] [--model DIR] [--patients 30] [--size 1024]
        [--backbone resnet10-w16|resnet18] [--workers 2]

Without --archive a phantom archive is generated in a temporary folder; without --model an
untrained encoder of --backbone (default: `regionmir train`'s resnet10-w16, 64 px crops, 128-d:
the cost of a trained one) is exported there (needs torch; the ingest itself does not use it).

It runs `run_ingest` (embedded store, --workers processes) and, in this process on one core
(one BLAS and one onnxruntime thread), times each film's three unavoidable steps: decode
(`dicom.read_image`), crop (`regions.crop_regions` of its regions) and encode (its crops, one
onnxruntime call). Those are timed before and after the ingest and averaged, since the machine
is shared. The floor is ``workers / (decode + crop + encode)`` films/s, what ``workers`` cores
could do if nothing else cost anything; ``floor_ratio`` is ingest films/s over that floor
(target >= 0.8), with the ingest's steady rate (from its first batch to its last; the
whole-run rate, worker start-up and model loading included, is printed beside it). Also printed: the other per-film costs (scene graph and payload fields,
point records, store upsert), which are what separates the ingest from its floor, and the
same in CPU seconds: decode + crop + encode CPU per film over the CPU the ingest spent per film
(main process + workers, sampled from /proc), ``cpu_ratio``, which does not depend on how
busy the machine is: on a shared machine wall-clock ratios mostly measure the neighbours.

The last line is a JSON object with every number (for bench/run_all.py).
"""

from __future__ import annotations

import os

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: before numpy loads
    os.environ.setdefault(_k, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def default_model(out: Path, backbone: str = "resnet10-w16") -> Path:
    """Export an untrained encoder with `regionmir train`'s default architecture (or ``backbone``)."""
    import torch

    from regionmir.anatomy import Anatomy
    from regionmir.inference.meta import ModelMeta
    from regionmir.train.export import export_encoder
    from regionmir.train.models import RegionEncoder

    torch.manual_seed(0)
    meta = ModelMeta("", "encoder", 64, 1, 0.1, 0.5, 0.25, tuple(a.slug for a in Anatomy), 128,
                     backbone, "scratch", "bench")
    export_encoder(RegionEncoder(backbone, 128), out / "encoder.onnx", meta)
    return out


class CpuSampler:
    """CPU seconds of this process's descendants (forkserver and ingest workers), sampled every 0.1 s.

    The workers are the forkserver's children, not ours, so ``RUSAGE_CHILDREN`` misses them;
    the last sample of each process before it exits is kept.
    """

    def __init__(self):
        import threading

        self.cpu: dict[int, float] = {}
        self.own = 0.0  # CPU seconds of the sampling thread itself (counted in this process's rusage)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _descendants(self, pid: int) -> list[int]:
        out = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            for k in kids:
                out += [k, *self._descendants(k)]
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.own = time.thread_time()
            for pid in self._descendants(os.getpid()):
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu[pid] = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
                except (OSError, IndexError, ValueError):
                    pass
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def total(self) -> float:
        return sum(self.cpu.values())


def step_costs(archive: Path, model: Path) -> dict:
    """Mean wall seconds per film of each step (and ``cpu_<step>``: CPU seconds), one thread,
    every film of the archive once."""
    from regionmir.archive import Archive
    from regionmir.dicom import read_image
    from regionmir.inference.encoder import Encoder
    from regionmir.ingest.sources import plan
    from regionmir.ingest.stages import Prepared, Preparer, to_points
    from regionmir.regions import crop_regions
    from regionmir.store import open_store

    enc = Encoder(model, device="cpu", threads=1)
    prep = Preparer(Path(archive), enc.spec)
    tasks, _ = plan(Archive(archive))
    enc.embed(np.zeros((36, enc.spec.size, enc.spec.size), np.float32), 36)  # warm-up
    t = {k: 0.0 for k in ("decode", "crop", "encode", "regions", "points", "upsert", "cpu_decode", "cpu_crop", "cpu_encode")}
    films = 0
    store = open_store(path=Path(tempfile.mkdtemp(prefix="bench-ingest-store-")))
    store.create_collection("b", enc.dim, {"model_id": enc.model_id})
    for task in tasks:
        c0, s0 = time.process_time(), time.perf_counter()
        rad = read_image(task.path)
        c1, s1 = time.process_time(), time.perf_counter()
        regions = prep.find_regions(task, rad.pixels)[0]
        if not regions:
            continue
        c2, s2 = time.process_time(), time.perf_counter()
        crops = crop_regions(rad.pixels, [r.box for r in regions], enc.spec)  # (R, S, S)
        c3, s3 = time.process_time(), time.perf_counter()
        emb, _ = enc.embed(crops, len(crops))
        c4, s4 = time.process_time(), time.perf_counter()
        p = prep(task)  # payload fields as the worker makes them (decodes again: not timed)
        s5 = time.perf_counter()
        points = to_points([p], emb, enc.model_id) if isinstance(p, Prepared) else []
        s6 = time.perf_counter()
        store.upsert("b", points)
        s7 = time.perf_counter()
        films += 1
        for k, dt in zip(t, (s1 - s0, s3 - s2, s4 - s3, s2 - s1, s6 - s5, s7 - s6, c1 - c0, c3 - c2, c4 - c3)):
            t[k] += dt
    store.close()
    shutil.rmtree(store.location, ignore_errors=True)
    return {k: v / films for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--backbone", default="resnet10-w16", help="architecture of the untrained model (no --model)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    os.environ["REGIONMIR_HOME"] = str(tmp / "home")
    os.environ.pop("QDRANT_URL", None)
    load0 = os.getloadavg()[0]
    archive = args.archive
    if archive is None:
        from regionmir.phantom import generate_archive

        archive = tmp / "archive"
        t = time.perf_counter()
        generate_archive(archive, seed=0, patients=args.patients, studies_per_patient=args.studies,
                         size=args.size, workers=args.workers)
        print(f"phantom archive: {args.patients * args.studies} images at {args.size} px "
              f"({time.perf_counter() - t:.1f} s to generate)", flush=True)
    model = args.model or default_model(tmp / "model", args.backbone)

    from regionmir.inference.encoder import load_encoder
    from regionmir.ingest.runner import IngestConfig, run_ingest

    enc = load_encoder(model)
    print(f"model {enc.model_id}: {enc.meta.backbone}, {enc.spec.size} px crops, {enc.dim}-d, {enc.providers[0]}")
    before = step_costs(archive, model)
    load_ingest = os.getloadavg()[0]
    import resource

    marks = []  # (time, films ingested) after each batch
    t_start = time.perf_counter()
    main0 = resource.getrusage(resource.RUSAGE_SELF)
    def cpu_now() -> float:  # this process + the workers (as last sampled)
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime - workers_cpu.own + workers_cpu.total

    def mark(summ, total) -> None:
        marks.append((time.perf_counter(), summ.ingested, cpu_now()))

    with CpuSampler() as workers_cpu:
        s = run_ingest(IngestConfig(archive, model, workers=args.workers, batch_size=args.batch_size),
                       on_progress=mark)
    main1 = resource.getrusage(resource.RUSAGE_SELF)
    main_cpu = main1.ru_utime + main1.ru_stime - main0.ru_utime - main0.ru_stime - workers_cpu.own
    after = step_costs(archive, model)
    cost = {k: (before[k] + after[k]) / 2 for k in before}
    stream = s.seconds - s.index_seconds
    whole_s = s.ingested / stream  # includes starting the worker processes and loading models
    (t0, n0, cpu0), (t1, n1, cpu1) = marks[0], marks[-1]
    if n1 > n0:  # steady state: from the first batch upserted to the last
        steady_cpu_film, films_s = (cpu1 - cpu0) / (n1 - n0), (n1 - n0) / (t1 - t0)
    else:  # one batch (a tiny archive, or --batch-size above its crops): the whole run is all there is
        print("one batch only: the steady figures are the whole run's (use more films or a smaller --batch-size)")
        steady_cpu_film, films_s = None, whole_s
    per_film = cost["decode"] + cost["crop"] + cost["encode"]
    floor = args.workers / per_film
    ms = {k: round(1000 * v, 2) for k, v in cost.items()}
    print(f"per film, one core (mean of before/after): decode {ms['decode']} ms, crop {ms['crop']} ms, "
          f"encode {ms['encode']} ms; not in the floor: scene graph + fields {ms['regions']} ms, "
          f"points {ms['points']} ms, upsert {ms['upsert']} ms")
    print("  before ingest: " + ", ".join(f"{k} {1000 * v:.2f}" for k, v in before.items()))
    print("  after ingest:  " + ", ".join(f"{k} {1000 * v:.2f}" for k, v in after.items()))
    print(f"floor: {args.workers} workers / {1000 * per_film:.2f} ms = {floor:.1f} films/s")
    print(f"ingest: {s.ingested} films, {s.regions} regions in {stream:.2f} s -> {whole_s:.2f} films/s "
          f"whole run (worker start-up included), {films_s:.2f} films/s steady (after the first batch), "
          f"+{s.index_seconds:.2f} s build_index; first batch after {t0 - t_start:.2f} s")
    cpu_floor = cost["cpu_decode"] + cost["cpu_crop"] + cost["cpu_encode"]
    cpu_film = (main_cpu + workers_cpu.total) / s.ingested
    steady_cpu_film = steady_cpu_film or cpu_film
    print(f"CPU per film: decode + crop + encode {1000 * cpu_floor:.2f} ms; the ingest spent {1000 * cpu_film:.2f} ms "
          f"(main {1000 * main_cpu / s.ingested:.2f}, workers {1000 * workers_cpu.total / s.ingested:.2f}, start-up "
          f"included); steady (first batch to last) {1000 * steady_cpu_film:.2f} ms: cpu_ratio "
          f"{cpu_floor / steady_cpu_film:.2f} steady, {cpu_floor / cpu_film:.2f} whole run (the floor_ratio a "
          f"machine with free cores would see, if the pipeline keeps them busy)")
    print(f"floor_ratio: {films_s / floor:.2f} steady, {whole_s / floor:.2f} whole run (target >= 0.8); load {load0:.2f} at start, "
          f"{load_ingest:.2f} at ingest, {os.getloadavg()[0]:.2f} at end")
    print(json.dumps({"bench": "ingest", "backbone": enc.meta.backbone, "films": s.ingested, "regions": s.regions,
                      "workers": args.workers, "size": args.size, "decode_ms": ms["decode"], "crop_ms": ms["crop"],
                      "encode_ms": ms["encode"], "regions_ms": ms["regions"], "points_ms": ms["points"],
                      "upsert_ms": ms["upsert"], "cpu_decode_ms": ms["cpu_decode"], "cpu_crop_ms": ms["cpu_crop"],
                      "cpu_encode_ms": ms["cpu_encode"], "ingest_cpu_ms_per_film": 1000 * cpu_film,
                      "main_cpu_ms_per_film": 1000 * main_cpu / s.ingested, "cpu_ratio": cpu_floor / steady_cpu_film,
                      "whole_run_cpu_ratio": cpu_floor / cpu_film, "steady_cpu_ms_per_film": 1000 * steady_cpu_film,
                      "floor_films_s": floor, "ingest_films_s": films_s, "whole_run_films_s": whole_s,
                      "whole_run_floor_ratio": whole_s / floor, "first_batch_s": t0 - t_start,
                      "ingest_regions_s": s.regions / stream, "index_s": s.index_seconds,
                      "with_index_films_s": s.ingested / s.seconds, "floor_ratio": films_s / floor,
                      "load_start": load0, "load_ingest": load_ingest, "load_end": os.getloadavg()[0]}))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
