"""`regionmir phantom`: write a synthetic chest X-ray archive in the MIMIC-CXR + ImaGenome layout."""

from __future__ import annotations

from pathlib import Path

import typer


def phantom(
    out_dir: Path = typer.Argument(..., help="Folder to write the archive into."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same files (byte for byte)."),
    patients: int = typer.Option(20, "--patients", min=1, help="Number of patients."),
    studies_per_patient: int = typer.Option(2, "--studies-per-patient", min=1, help="Studies per patient."),
    size: int = typer.Option(1024, "--size", min=64, help="Long side of each image in pixels."),
    preview_k: int = typer.Option(0, "--preview", min=0, help="Also write K preview PNGs with boxes."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON only."),
) -> None:
    """Generate phantom chest radiographs (DICOM), scene graphs and patient-level splits."""
    from regionmir.phantom import generate_archive, preview

    if as_json:
        import json

        summary = generate_archive(out_dir, seed, patients, studies_per_patient, size, workers)
        if preview_k:
            summary["preview"] = [str(p) for p in preview(out_dir, preview_k)]
        typer.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    columns = (TextColumn("[bold]phantom"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} img/s"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("images", total=patients * studies_per_patient, rate="  -  ")

        def update(done: int, total: int) -> None:
            speed = bar.tasks[0].speed
            bar.update(task, completed=done, rate=f"{speed:5.1f}" if speed else "  -  ")

        summary = generate_archive(out_dir, seed, patients, studies_per_patient, size, workers, update)
    console.print(
        f"Wrote {summary['images']} images of {summary['patients']} patients to {out_dir} "
        f"in {summary['seconds']:.1f} s ({summary['images_per_s']:.1f} img/s); "
        f"splits {summary['splits']}; normal {summary['normal_images']}; findings {summary['findings']}"
    )
    if preview_k:
        paths = preview(out_dir, preview_k)
        console.print(f"Previews: {paths[-1].parent}")
