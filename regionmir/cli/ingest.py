"""`regionmir ingest`: crop, embed and store every labeled region of an archive."""

from __future__ import annotations

from pathlib import Path

import typer


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected i/n such as 0/2, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise typer.BadParameter(f"need 0 <= i < n, got {text!r}")
    return i, n


def ingest(
    archive: Path = typer.Argument(..., exists=True, file_okay=False, help="Archive folder (MIMIC-CXR / ImaGenome layout or a folder of DICOMs)."),
    model: Path = typer.Option(None, "--model", help="Model folder or encoder.onnx \\[default: $REGIONMIR_HOME/model]."),
    collection: str = typer.Option(None, "--collection", help="Collection name \\[default: regions]."),
    qdrant_url: str = typer.Option(None, "--qdrant-url", envvar="QDRANT_URL", help="Qdrant server; default: the embedded store under $REGIONMIR_HOME/store."),
    workers: int = typer.Option(None, "--workers", min=0, help="Decode+crop processes (0: in-process) \\[default: min(2, cpus)]."),
    shard: str = typer.Option("0/1", "--shard", help="Take the images whose stable hash mod n == i (i/n)."),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Crops per upsert (and per encoder call on a GPU)."),
    shards: int = typer.Option(None, "--shards", envvar="QDRANT_SHARDS", min=1, help="Server only: shards of a new collection; default: the server's."),
    replication_factor: int = typer.Option(None, "--replication-factor", envvar="QDRANT_REPLICATION_FACTOR", min=1, help="Server only: copies of each shard of a new collection (cluster); default: the server's."),
    write_consistency: int = typer.Option(None, "--write-consistency", envvar="QDRANT_WRITE_CONSISTENCY", min=1, help="Server only: replicas that must acknowledge a write; default: the server's."),
    report: Path = typer.Option(None, "--report", help="JSONL report of failed/unlabeled images \\[default: $REGIONMIR_HOME/reports/]."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON only."),
) -> None:
    """Ingest ARCHIVE: every labeled region of every DICOM becomes a point in the collection.

    Rerunning resumes: images already ingested are skipped, ids never duplicate.

    --shards, --replication-factor and --write-consistency lay out a new collection on a Qdrant server.
    """
    import json

    from regionmir import config
    from regionmir.ingest import IngestConfig, run_ingest

    cfg = IngestConfig(
        archive=archive, model=model, collection=collection or config.DEFAULT_COLLECTION,
        qdrant_url=qdrant_url or None, api_key=config.qdrant_api_key(), shard=_shard(shard),
        batch_size=batch_size, report=report, shards=shards,
        replication_factor=replication_factor, write_consistency=write_consistency,
        **({} if workers is None else {"workers": workers}),
    )
    if as_json:
        summary = run_ingest(cfg)
        typer.echo(json.dumps(summary.as_dict()))
        return
    summary = _with_progress(cfg, run_ingest)
    _print_summary(summary)


def _with_progress(cfg, run):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("ingest", total=None, rates="")

        def update(s, total):
            done = s.ingested + s.failed + s.unlabeled
            rates = f"{s.images_per_s:.1f} img/s  {s.regions_per_s:.0f} regions/s"
            bar.update(task, total=total, completed=done, rates=rates)

        return run(cfg, on_progress=update)


def _print_summary(s) -> None:
    from rich.console import Console

    c = Console()
    c.print(
        f"[bold]{s.collection}[/] ({s.store}): {s.images} images in this shard, "
        f"{s.ingested} ingested ({s.regions} regions), {s.skipped} skipped (already done), "
        f"{s.unlabeled} unlabeled, {s.failed} failed "
        f"in {s.seconds:.1f} s ({s.images_per_s:.1f} images/s, {s.regions_per_s:.0f} regions/s)",
        highlight=False,
    )
    if s.failed or s.unlabeled:
        c.print(f"Failed and unlabeled images are listed in {s.report}", highlight=False)
