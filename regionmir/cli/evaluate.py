"""`regionmir evaluate ARCHIVE --model MODEL_DIR`: retrieval and classification metrics on a held-out split."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from regionmir.cli.train import Device  # one definition of the device choice


class Split(str, enum.Enum):
    test = "test"
    valid = "valid"


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(p) for p in text.replace(" ", "").split(",") if p}))
    except ValueError:
        ks = ()
    if not ks or ks[0] < 1:
        raise typer.BadParameter(f"--k takes positive integers separated by commas (1,5,10); got {text!r}")
    return ks


def evaluate(
    archive: Path = typer.Argument(..., exists=True, file_okay=False, help="Archive folder with splits/{train,test}.csv."),
    model: Path = typer.Option(None, "--model", "-m", help="Model folder (encoder.onnx, report.json; encoders in sub-folders are evaluated too) or an .onnx file. Default: $REGIONMIR_HOME/model."),
    out: Path = typer.Option(None, "--out", "-o", help="Report folder (report.md, report.json, PNGs). Default: MODEL_DIR/eval-SPLIT."),
    k: str = typer.Option("1,5,10", "--k", help="Cut-offs, comma separated."),
    split: Split = typer.Option(Split.test, help="Query split; the reference collection is the train split."),
    ann: bool = typer.Option(False, "--ann", help="Score the HNSW (approximate) search instead of exact search."),
    curve_depth: int = typer.Option(50, min=1, help="Hits per query for the precision-recall curve."),
    workers: int = typer.Option(0, min=0, help="Decode/crop processes (0: in this process)."),
    device: Device = typer.Option(Device.auto),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw PNG plots (needs matplotlib: pip install 'regionmir[eval]')."),
    as_json: bool = typer.Option(False, "--json", help="Print the report JSON on stdout only."),
) -> None:
    """Evaluate the encoder(s) of MODEL_DIR on ARCHIVE: anatomy accuracy, same-anatomy, findings and same-patient retrieval."""
    import json

    from regionmir.evaluation.report import _clean, write_report
    from regionmir.evaluation.run import EvalConfig
    from regionmir.evaluation.run import evaluate as run
    from regionmir.inference.folder import ModelFolder

    ks = _ks(k)
    folder = ModelFolder(model)
    out = out or folder.path / f"eval-{split.value}"
    cfg = EvalConfig(archive=archive, model=folder.named or folder.path, out=out, ks=ks, split=split.value,
                     exact=not ann, curve_depth=max(curve_depth, max(ks)), workers=workers,
                     device=device.value, plots=plots)
    if as_json:
        report = run(cfg)
        write_report(report, out, plots=plots)
        typer.echo(json.dumps(_clean(report)))
        return
    from rich.console import Console

    console = Console()
    with console.status(f"Evaluating on the {split.value} split of {archive} ..."):
        report = run(cfg)
        files = write_report(report, out, plots=plots)
    _print_summary(report, console)
    console.print(f"{report['seconds']['total']:.0f} s; wrote " + ", ".join(str(f) for f in files))


def _print_summary(report: dict, console) -> None:
    from rich.table import Table

    kk = max(report["ks"])
    table = Table(title=f"{report['split']} queries vs train collection ({report['search']} search)")
    cols = ("model", "acc", f"same anat@{kk}", f"P@{kk} all", f"mAP@{kk} abn.", f"HR@{kk} abn.",
            f"MRR@{kk} abn.", f"same pt HR@{kk}", f"ANN rec@{kk}")
    for col in cols:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for m in report["models"]:
        fa, fb = m["findings_all"], m["findings_abnormal"]
        vals = (m["anatomy"]["accuracy"], m["anatomy"][f"same_anatomy@{kk}"], fa[f"precision@{kk}"],
                fb[f"map@{kk}"], fb[f"hit_rate@{kk}"], fb[f"mrr@{kk}"], m["same_patient"][f"hit_rate@{kk}"],
                m["ann_recall"][f"recall@{kk}"])
        table.add_row(m["label"], *(f"{v:.3f}" if v == v else "n/a" for v in vals))
    console.print(table)
