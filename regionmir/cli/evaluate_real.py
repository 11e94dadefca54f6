"""`regionmir evaluate-real FOLDER --model DIR`: how a model does on real films with lung masks or boxes."""

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
    """Score the localizer (lung box IoU) and encoder (real lung crop accuracy, findings retrieval) on real films."""
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


def _print(report: dict, k: int) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Real films ({report['split']}: {report['films']} films, {report['films_with_truth']} with lung truth)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    loc = report.get("localizer")
    if loc:
        for view in ("all", "PA", "AP"):
            v = loc[view]
            t.add_row(f"lung box IoU, {view} (n={v['n']}): right / left / mean",
                      f"{v['iou_right']:.3f} / {v['iou_left']:.3f} / {v['iou_mean']:.3f}")
    enc = report["encoder"]
    if enc:
        t.add_row(f"encoder accuracy on true lung crops (n={enc['crops_truth']})", f"{enc['accuracy']:.3f}")
        t.add_row("  right / left lung", f"{enc['accuracy_right-lung']:.3f} / {enc['accuracy_left-lung']:.3f}")
        t.add_row(f"same anatomy@{k} (right vs left lung crops)", f"{enc[f'same_anatomy@{k}']:.3f}")
        for slug, f in enc["findings"].items():
            t.add_row(f"findings {slug}: P@{k} / mAP@{k} / HR@{k} (chance P / HR)",
                      f"{f[f'precision@{k}']:.3f} / {f[f'map@{k}']:.3f} / {f[f'hit_rate@{k}']:.3f} "
                      f"({f['chance_precision']:.3f} / {f[f'chance_hit_rate@{k}']:.3f})")
    Console().print(t)
