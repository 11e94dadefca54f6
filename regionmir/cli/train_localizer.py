"""`regionmir train-localizer`: train, export and evaluate the anatomy localizer (needs torch)."""

from __future__ import annotations

from pathlib import Path

import typer


def train_localizer(
    archive: Path = typer.Argument(..., exists=True, file_okay=False, help="Archive with splits/ and Chest ImaGenome scene graphs."),
    out: Path = typer.Option(..., "--out", help="Model folder; localizer.onnx and localizer_report.{json,md} go there."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Passes over the train split (fresh augmentation each)."),
    size: int = typer.Option(128, "--size", min=32, help="Letterbox side in pixels, a multiple of 32."),
    device: str = typer.Option("auto", "--device", help="Torch device: auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Random seed (initialisation, shuffling, augmentation)."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for torch (0 = the CPUs not busy with other work, at least 1)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Films per optimizer step."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use at most this many films per split (quick runs)."),
    real: Path = typer.Option(None, "--real", exists=True, file_okay=False, help="Real-film folder (films.csv): its train films with lung masks/boxes join training (their lung boxes and, where given, heart boxes only)."),
    refine: bool = typer.Option(True, "--refine/--no-refine", help="Second stage that corrects each box from finer features around it (--no-refine: the one-stage net, for comparison)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
) -> None:
    """Train the localizer on ARCHIVE's train split and evaluate it on test (else valid)."""
    import json

    from regionmir.errors import MissingDependencyError

    if size % 32:
        raise typer.BadParameter(f"--size must be a multiple of 32, got {size}")
    try:
        from regionmir.train.localizer.run import LocalizerConfig
        from regionmir.train.localizer.run import train_localizer as run
        from regionmir.train.progress import RichProgress
    except ImportError as e:
        raise MissingDependencyError("torch", "train", "Training the localizer") from e
    cfg = LocalizerConfig(size=size, epochs=epochs, batch_size=batch_size, device=device,
                          seed=seed, threads=threads, limit=limit, real=str(real or ""), refine=refine)
    with RichProgress(enabled=not as_json) as progress:
        report = run(archive, out, cfg, progress)
    if as_json:
        typer.echo(json.dumps(report))
        return
    _print_report(report, out)


def _print_report(report: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"localizer {report['model_id']} -> {out / 'localizer.onnx'} "
                  f"({report['train_images']} films, {report['train_seconds']} s)")
    if "regions" not in report:
        console.print("no test or valid split: not evaluated")
        return
    table = Table("region", "n", "mean IoU", "IoU>=0.5", "confidence",
                  title=f"{report['split']} split, {report['images']} images")
    for slug, r in report["regions"].items():
        if r["n"]:
            table.add_row(slug, str(r["n"]), f"{r['mean_iou']:.3f}", f"{r['iou50']:.0%}", f"{r['mean_confidence']:.2f}")
    console.print(table)
    console.print(f"all boxes: mean IoU {report['mean_iou']:.3f}, IoU>=0.5 {report['iou50']:.1%}; "
                  f"confidence vs IoU r={report['confidence_iou_corr'] or float('nan'):.2f}")
