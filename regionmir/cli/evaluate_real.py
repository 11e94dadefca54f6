"""`regionmir evaluate-real FOLDER --model DIR`: how a model does on real films with lung and heart truth."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate_real(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder with films.csv (make one with `python -m regionmir.evaluation.real.prep`)."),
    model: Path = typer.Option(None, "--model", "-m", help="Model folder (encoder.onnx, localizer.onnx). Default: $REGIONMIR_HOME/model."),
    out: Path = typer.Option(None, "--out", "-o", help="Report folder (real_check.json, real_check.png). Default: MODEL_DIR/eval-real."),
    split: str = typer.Option("test", help="Films to score: test (held out from any real-data training), train or all."),
    k: int = typer.Option(10, min=1, help="Cut-off for retrieval metrics."),
    limit: int = typer.Option(0, min=0, help="Score only the first N films (0: all)."),
    sheet: int = typer.Option(12, min=0, help="Films on the preview sheet."),
    as_json: bool = typer.Option(False, "--json", help="Print the report JSON on stdout only."),
) -> None:
    """Score the localizer (lung and heart box IoU, CTR) and encoder (real crop accuracy, findings and
    enlarged-heart retrieval) on real films, per source and overall."""
    import json
    import time

    from regionmir.evaluation.real import run_check, write_sheet
    from regionmir.inference.folder import ModelFolder

    out = out or ModelFolder(model).path / "eval-real"
    t0 = time.perf_counter()
    report, results = run_check(folder, model, split=split, k=k, limit=limit or None, keep_images=sheet)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_check.json").write_text(json.dumps(report, indent=1))
    png = write_sheet(results, out / "real_check.png")
    if as_json:
        typer.echo(json.dumps(report))
        return
    _print(report, k)
    typer.echo(f"wrote {out / 'real_check.json'}" + (f", {png}" if png else ""))


def _f(v) -> str:
    import math

    return "-" if v is None or math.isnan(v) else f"{v:.3f}"


def _print(report: dict, k: int) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Real films ({report['split']}: {report['films']} films, {report['films_with_truth']} with truth; "
                    + ", ".join(f"{s} {n}" for s, n in report.get("sources", {}).items()) + ")")
    t.add_column("measure")
    t.add_column("value", justify="right")
    loc = report.get("localizer")
    if loc:
        groups = [(v, loc[v]) for v in ("all", "PA", "AP")] + list(loc.get("by_source", {}).items())
        for name, v in groups:
            t.add_row(f"box IoU, {name} (n={v['n']}): right / left / mean lung; heart (n={v['n_heart']})",
                      f"{_f(v['iou_right'])} / {_f(v['iou_left'])} / {_f(v['iou_mean'])}; {_f(v['iou_heart'])}")
    enc = report["encoder"]
    if enc:
        t.add_row(f"encoder accuracy on true crops (n={enc['crops_truth']}): lungs / heart",
                  f"{_f(enc['accuracy_lungs'])} / {_f(enc['accuracy_cardiac-silhouette'])}")
        t.add_row("  right / left lung", f"{_f(enc['accuracy_right-lung'])} / {_f(enc['accuracy_left-lung'])}")
        t.add_row(f"same anatomy@{k}: right vs left lung crops; heart crops", f"{_f(enc[f'same_anatomy@{k}'])}; "
                  f"{_f(enc[f'same_anatomy@{k}_heart'])}")
        for src, e in enc.get("by_source", {}).items():
            t.add_row(f"  {src} (n={e['crops_truth']}): accuracy lungs / heart; same anatomy@{k} heart",
                      f"{_f(e['accuracy_lungs'])} / {_f(e['accuracy_cardiac-silhouette'])}; {_f(e[f'same_anatomy@{k}_heart'])}")
        for slug, f in enc["findings"].items():
            t.add_row(f"findings {slug}: P@{k} / mAP@{k} / HR@{k} (chance P / HR)",
                      f"{_f(f[f'precision@{k}'])} / {_f(f[f'map@{k}'])} / {_f(f[f'hit_rate@{k}'])} "
                      f"({_f(f['chance_precision'])} / {_f(f[f'chance_hit_rate@{k}'])})")
        eh = enc.get("enlarged_heart")
        if eh and eh["enlarged"]:
            for name, f in (("embedding", eh["embedding"]), ("+ CTR filter", eh["ctr_filter"])):
                t.add_row(f"enlarged hearts (CTR > 0.5, {eh['enlarged']} queries), {name}: P@{k} / mAP@{k} (chance P)",
                          f"{_f(f[f'precision@{k}'])} / {_f(f[f'map@{k}'])} ({_f(f['chance_precision'])})")
    ctr = report.get("ctr")
    if ctr:
        for name, c in [("all", ctr)] + list(ctr.get("by_source", {}).items()):
            if c["n_predicted_vs_masks"] or c["n_predicted_vs_given"]:
                t.add_row(f"CTR MAE, {name}: predicted vs masks (n={c['n_predicted_vs_masks']}) / vs given "
                          f"(n={c['n_predicted_vs_given']}); masks vs given",
                          f"{_f(c['mae_predicted_vs_masks'])} / {_f(c['mae_predicted_vs_given'])}; {_f(c['mae_masks_vs_given'])}")
    Console().print(t)
