"""Run every bench in sequence, collect each one's final JSON line, and write bench/README.md.

    .venv/bin/python bench/run_all.py            # quick sizes for a 2-core machine (`make bench`)
    .venv/bin/python bench/run_all.py --full     # the sizes the issue asks for (tens of minutes)
    .venv/bin/python bench/run_all.py --only encoder ingest   # re-run two; keep the other rows

Each bench runs in its own process under ``nice -n 5`` (the CPU is shared), its output is shown
as it runs, and the load average is recorded before each one: numbers taken under load are
slower, and the README says which load each came from. Nothing is asserted.

Only the part of the README between the two ``GENERATED`` markers is rewritten; the dated
sections written by hand around it (longer runs, before/after comparisons) are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def benches(full: bool, localizer_model: str) -> dict[str, list[str]]:
    """Bench name -> arguments after ``python bench/<file>``; quick sizes unless ``full``."""
    q = not full
    return {
        "phantom": ["bench_phantom.py", "--patients", "8" if q else "40"],
        "encoder": ["bench_encoder.py", "--n", "1024" if q else "2048"],
        # 240 / 480 films: the steady part needs many batches (12 films measured start-up, 120 a
        # steady part too short to drain evenly: 0.73 where 240 films gave 0.85 in the same hour)
        "ingest": ["bench_ingest.py", "--patients", "120" if q else "240"],
        "search_cli": ["bench_search_cli.py", "--points", "20000" if q else "100000",
                       "--queries", "100" if q else "200"],
        "localizer": ["bench_localizer.py", localizer_model, "--repeat", "10" if q else "50"],
        "store": ["bench_store.py", "--n", "20000" if q else "100000", "--dim", "128", *([] if q else ["512"]),
                  "--designs", *(["tenant", "one"] if q else ["one", "one-lean", "tenant", "per"]), "--local"],
        "search_scale": ["bench_search_scale.py", "--sizes", *(["100000"] if q else ["1000000"]),
                         "--queries", "100" if q else "200"],
        "precision": ["bench_precision.py", "--patients", "16" if q else "40", "--epochs", "2" if q else "6"],
        "pacs": ["bench_pacs.py", "--patients", "10" if q else "30", "--repeat", "2"],
    }


def machine() -> dict:
    """CPU model, cores, RAM and OS of this machine."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "ram_gib": round(mem_kib / 2**20, 1),
            "os": platform.platform(), "python": platform.python_version()}


def make_localizer_model(folder: Path) -> None:
    """An untrained encoder + localizer of the default architecture (needs torch, like the benches)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
            "from bench_ingest import default_model; from bench_search_cli import add_localizer; "
            "add_localizer(default_model(Path(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(BENCH), str(folder)], check=True)


def run_one(name: str, args: list[str], timeout: float) -> dict:
    """Run one bench, echoing its output; returns its JSON line, load, wall time and command."""
    cmd = ["nice", "-n", "5", sys.executable, str(BENCH / args[0]), *args[1:]]
    shown = "nice -n 5 .venv/bin/python bench/" + " ".join(
        "MODEL_DIR" if a.startswith(tempfile.gettempdir()) else shlex.quote(a) for a in args)
    load = os.getloadavg()
    print(f"\n=== {name}: {shown}  (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", flush=True)
    t = time.perf_counter()
    lines, rc = [], None
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
            if time.perf_counter() - t > timeout:
                proc.kill()
                lines.append(f"killed after {timeout:.0f} s")
                break
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    result = next((json.loads(x) for x in reversed(lines) if x.startswith("{")), None)
    return {"name": name, "command": shown, "rc": rc, "seconds": time.perf_counter() - t,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "load_start": load[0], "load_end": os.getloadavg()[0], "result": result,
            "tail": lines[-5:] if rc or result is None else []}


def summary(name: str, r: dict | None) -> str:
    """The key numbers of one bench, in one table cell."""
    if r is None:
        return "failed (see below)"
    if name == "phantom":
        return f"{r['images']} images at {r['size']} px: {r['images_per_s']:.2f} images/s, {r['cpu_s_per_image']:.2f} CPU s/image"
    if name == "encoder":
        return (f"onnxruntime {r['ort_crops_s']:.0f} crops/s vs torch eager {r['torch_crops_s']:.0f} crops/s: "
                f"**{r['ratio']:.2f}x** ({r['backbone']}, {r['crop']} px, batch {r['batch']})")
    if name == "ingest":
        return (f"{r['films']} films ({r['backbone']}): decode {r['decode_ms']:.1f} + crop {r['crop_ms']:.1f} + encode "
                f"{r['encode_ms']:.1f} ms/film -> floor {r['floor_films_s']:.1f} films/s; ingest {r['ingest_films_s']:.1f} "
                f"films/s steady: **floor_ratio {r['floor_ratio']:.2f}** ({r['whole_run_floor_ratio']:.2f} whole run); "
                f"cpu_ratio {r['cpu_ratio']:.2f}")
    if name == "search_cli":
        m = r["cold_median_s"]
        parts = ["startup+imports", "model_load", "decode", "localize", "encode", "query"]
        split = ", ".join(f"{k} {m.get(k, 0) * 1000:.0f}" for k in parts)
        return (f"cold `regionmir search` on {r['points']} points: **{m['wall'] * 1000:.0f} ms** wall "
                f"({split} ms); in-process query p50 {r['query']['p50_ms']:.2f} ms, recall@10 {r['query']['recall@10']:.3f}")
    if name == "localizer":
        return "; ".join(f"{x['input']}: locate {x['locate_ms'][0]:.1f} ms" for x in r["rows"])
    if name == "store":
        return "; ".join(f"{x['design']} d{x['dim']}: p50 {x['p50_ms']:.2f} ms" +
                         (f", build {x['optimize_s']:.1f} s, recall {x['recall']:.3f}" if "optimize_s" in x else "")
                         for x in r["rows"])
    if name == "search_scale":
        return "; ".join(f"{x['n']:,} {x['variant']}: p50 {x['ann']['p50_ms']:.2f} / p95 {x['ann']['p95_ms']:.2f} ms, "
                         f"recall@10 {x['ann']['recall']:.3f}; build {x['upsert_s'] + x['build_s']:.0f} s; "
                         f"open {x['open_s']:.1f} s, RSS open +{x['rss_open_mib']:.0f} MiB; cold CLI {x['cli_wall_s']:.2f} s"
                         for x in r["results"]) + " (table below)"
    if name == "precision":
        return "; ".join(f"{k} precision@10 {v['precision@10']:.3f} (base rate {v['base_rate']:.3f}, {v['queries']} queries)"
                         for k, v in r["results"].items())
    if name == "pacs":
        f, w, c = r["folder"], r["dicomweb"], r["cstore"]
        rates = lambda runs: " / ".join(f"{x['images_per_s']:.2f}" for x in runs)  # noqa: E731
        return (f"{r['images']} images at {r['size']} px ({r['megabytes']} MB): ingest from the folder {rates(f)} images/s, "
                f"over DICOMweb from a local Orthanc {rates(w)} images/s (alternating runs); C-STORE into `listen` "
                f"{c['ack_images_s']:.2f} images/s acknowledged, {c['ingested_images_s']:.2f} images/s until all were ingested")
    return json.dumps(r)[:200]


def scale_table(r: dict) -> list[str]:
    """Markdown rows of bench_search_scale: one per size and store variant."""
    out = ["| regions | variant | p50 / p95 ms, first pass (warm) | recall@10 | other breadths: p50 ms (recall) | exact=True p50 ms "
           "| numpy p50 ms | upsert s | index s (builds, segments) | peak anon while building MiB | disk B/region "
           "| open s | RSS open / after queries MiB | cold CLI s | load |", "|" + "---|" * 15]
    for x in r["results"]:
        a, e = x["ann"], x["exact"]
        efs = ", ".join(f"{k[2:]}: {v['p50_ms']:.2f} ({v['recall']:.3f})" for k, v in x.items()
                        if k.startswith("ef") and isinstance(v, dict)) or "-"
        out.append(f"| {x['n']:,} | {x['variant']} | {a['p50_ms']:.2f} / {a['p95_ms']:.2f} (warm {x['ann_warm']['p50_ms']:.2f} "
                   f"/ {x['ann_warm']['p95_ms']:.2f}) | {a['recall']:.3f} | {efs} "
                   f"| {e['p50_ms']:.2f} | {x['numpy_p50_ms']:.2f} | {x['upsert_s']:.0f} "
                   f"| {x['build_s']:.0f} ({x['index_builds']}, {x['segments']}) "
                   f"| {x['anon_peak_build_mib']:.0f} | {x['disk_b_per_region']:.0f} | {x['open_s']:.2f} "
                   f"| +{x['rss_open_mib']:.0f} / +{x['rss_after_mib']:.0f} | {x['cli_wall_s']:.2f} | {x['load_start']:.1f} |")
    return out


def ratios(res: dict) -> list[str]:
    """The side-by-side ratios the issue asks for, each from one bench process."""
    out = ["", "## Side by side (each ratio from one process, same load)", ""]
    if "ingest" in res:
        r = res["ingest"]
        out.append(f"- Ingest / floor: {r['ingest_films_s']:.1f} / {r['floor_films_s']:.1f} films/s = "
                   f"**{r['floor_ratio']:.2f}** steady ({r['films']} films, {r['backbone']}; target >= 0.8); "
                   f"CPU: decode+crop+encode / ingest CPU per film = {r['cpu_ratio']:.2f}.")
    if "encoder" in res:
        r = res["encoder"]
        out.append(f"- onnxruntime / torch eager: {r['ort_crops_s']:.0f} / {r['torch_crops_s']:.0f} crops/s = **{r['ratio']:.2f}x**.")
    for x in res.get("search_scale", {}).get("results", []):
        out.append(f"- Filtered query p50 at {x['n']:,} regions ({x['variant']}): graph {x['ann']['p50_ms']:.2f} ms, "
                   f"exact {x['exact']['p50_ms']:.2f} ms, numpy {x['numpy_p50_ms']:.2f} ms.")
    if "search_cli" in res:
        r, m = res["search_cli"], res["search_cli"]["cold_median_s"]
        keys = ["startup+imports", "open_store", "model_load", "model_wait", "collection_check", "decode", "lookup",
                "localizer_load", "localize", "encode", "query", "close+exit"]
        out.append(f"- Cold `regionmir search` ({r['points']:,} points, {r['size']} px DICOM, median of {r['runs']}): "
                   f"**{m['wall'] * 1000:.0f} ms** = " + ", ".join(f"{k} {m.get(k, 0) * 1000:.1f}" for k in keys)
                   + " ms (model_load runs in a thread beside open_store; model_wait is what it adds).")
    if "pacs" in res:
        r = res["pacs"]
        mean = lambda runs, k: sum(x[k] for x in runs) / len(runs)  # noqa: E731
        out.append(f"- DICOMweb / folder ingest, same {r['images']} files, same run: "
                   f"{mean(r['dicomweb'], 'images_per_s'):.2f} / {mean(r['folder'], 'images_per_s'):.2f} images/s = "
                   f"**{mean(r['dicomweb'], 'images_per_s') / mean(r['folder'], 'images_per_s'):.2f}** (streaming part); "
                   f"whole calls incl. model load, store open and QIDO-RS: {mean(r['dicomweb'], 'wall_images_s'):.2f} / "
                   f"{mean(r['folder'], 'wall_images_s'):.2f} images/s.")
    return out if len(out) > 3 else []


BEGIN = "<!-- GENERATED by bench/run_all.py: everything down to the END marker is rewritten on each run -->"
END = "<!-- END of the part bench/run_all.py writes; the sections below are kept -->"


def cell(name: str, result: dict | None) -> str:
    """summary(), or what to do when a kept row was written by an older version of its bench."""
    try:
        return summary(name, result)
    except (KeyError, TypeError):
        return f"kept from an older version of the bench; re-run it: `bench/run_all.py --only {name}`"


def generated(runs: list[dict], info: dict, full: bool, started: str, load: tuple, only: list | None) -> list[str]:
    """The README part run_all.py owns: machine, load, commands and the latest numbers."""
    flag = " --full" if full else ""
    lines = [
        BEGIN, "",
        f"Written by `bench/run_all.py` at {started} UTC ({'full' if full else 'quick'} mode); rows not re-run "
        "then (`--only`) keep their earlier numbers, date and command.", "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM; {info['os']}, Python {info['python']}",
        f"- Load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (the CPU is shared; each row has its own)",
        f"- Latest invocation: `.venv/bin/python bench/run_all.py{flag}{' --only ' + ' '.join(only) if only else ''}`; `make bench` runs "
        "`.venv/bin/python bench/run_all.py` (quick sizes); `--full` takes the big sizes, `--only NAME...` re-runs "
        "some rows. Each row shows its own command (runnable alone), date and load average at its start.", "",
        "| bench | key numbers | load at start | wall s | finished (UTC) | command |", "|---|---|---|---|---|---|",
    ]
    for r in runs:
        command = re.sub(r"/\S*/bench-all-\w+/model", "MODEL_DIR", r["command"])
        lines.append(f"| {r['name']} | {cell(r['name'], r['result'])} | {r['load_start']:.2f} | {r['seconds']:.0f} "
                     f"| {r.get('date', '?')} | `{command}` |")
    lines += ["", "MODEL_DIR: an untrained encoder + localizer of the default architecture that run_all.py exports "
              "to a temporary folder (same cost as trained ones)."]
    try:
        lines += ratios({r["name"]: r["result"] for r in runs if r["result"]})
    except (KeyError, TypeError):
        lines += ["", "(Side-by-side ratios left out: a kept row comes from an older version of its bench.)"]
    scale = next((r for r in runs if r["name"] == "search_scale" and r["result"]), None)
    if scale:
        try:
            table = scale_table(scale["result"])
        except (KeyError, TypeError):
            table = ["(kept from an older version of bench_search_scale.py; re-run it with `--only search_scale`)"]
        lines += ["", "### Filtered search at scale (bench_search_scale.py)", "",
                  "One anatomy filter, top 10, 128-d synthetic region vectors; recall@10 against exact numpy. "
                  "Each variant is an EmbeddedStore built as `regionmir ingest` builds it (see VARIANTS in the "
                  "bench); latency, open time and RSS (growth after opening / after the queries, mmapped pages "
                  "included) are measured in a fresh process; cold CLI is the median wall time of new "
                  "`regionmir search` processes on that store. load: load average at the start of each row.", "",
                  *table]
    failed = [r for r in runs if r["rc"] or r["result"] is None]
    if failed:
        lines += ["", "### Failures", ""]
        for r in failed:
            lines += [f"- {r['name']} (exit {r['rc']}):", "", "```", *r["tail"], "```"]
    return lines + ["", END]


def write_readme(path: Path, runs: list[dict], info: dict, full: bool, started: str, load: tuple,
                 only: list | None = None) -> Path:
    """Rewrite the generated part of ``path``; the text before and after the markers stays as it was.

    A README without markers keeps all of its text below the new generated part."""
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
    else:
        title, _, body = old.partition("\n")
        head = title + "\n\n"
        tail = "\n\n" + body.lstrip("\n") if body.strip() else "\n"
    path.write_text(head + "\n".join(generated(runs, info, full, started, load, only)) + tail)
    return path


def merged(runs: list[dict], only: list[str] | None, old: Path) -> list[dict]:
    """With ``--only``, the earlier rows of the other benches (from last_run.json) plus these."""
    if not only or not old.is_file():
        return runs
    new = {r["name"]: r for r in runs}
    kept = [r for r in json.loads(old.read_text())["runs"] if r["name"] not in new]
    order = list(benches(False, ""))
    return sorted(kept + runs, key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the big sizes (100k-point CLI search, 1M-region scale)")
    ap.add_argument("--only", nargs="+", help="run only these benches")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per bench before it is killed")
    ap.add_argument("--readme-only", action="store_true", help="rewrite the README from last_run.json")
    ap.add_argument("--readme", type=Path, default=BENCH / "README.md",
                    help="the README to write (default bench/README.md); last_run.json is kept beside it")
    args = ap.parse_args()
    readme = args.readme.resolve()
    last_run = readme.with_name("last_run.json")
    if args.readme_only:
        last = json.loads(last_run.read_text())
        path = write_readme(readme, last["runs"], last["machine"], last["full"], last["started"], last["load"],
                            last.get("only"))
        print(f"wrote {path}")
        return
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load, info = os.getloadavg(), machine()
    print(f"{info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        model = Path(tmp) / "model"
        todo = benches(args.full, str(model))
        unknown = set(args.only or []) - set(todo)
        if unknown:
            sys.exit(f"Unknown bench(es) {sorted(unknown)}; choose from {sorted(todo)}.")
        if "localizer" in (args.only or todo):
            make_localizer_model(model)
        runs = [run_one(name, a, args.timeout) for name, a in todo.items() if not args.only or name in args.only]
    runs = merged(runs, args.only, last_run)
    last_run.write_text(json.dumps({"started": started, "machine": info, "load": load,
                                    "full": args.full, "only": args.only, "runs": runs}, indent=1) + "\n")
    path = write_readme(readme, runs, info, args.full, started, load, args.only)
    print(f"\nwrote {path}")
    if any(r["rc"] or r["result"] is None for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
