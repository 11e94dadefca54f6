"""`regionmir ingest`: crop, embed and store every labeled region of an archive."""

from __future__ import annotations

from pathlib import Path

import typer


def ingest(
    archive: str = typer.Argument(..., help="Archive folder (MIMIC-CXR / ImaGenome layout or a folder of DICOMs), or a DICOMweb service root http(s)://host:port/dicom-web."),
    model: Path = typer.Option(None, "--model", help="Model folder or encoder.onnx \\[default: $REGIONMIR_HOME/model]."),
    collection: str = typer.Option(None, "--collection", help="Collection name \\[default: regions]."),
    qdrant_url: str = typer.Option(None, "--qdrant-url", envvar="QDRANT_URL", help="Qdrant server; default: the embedded store under $REGIONMIR_HOME/store."),
    workers: int = typer.Option(None, "--workers", min=0, help="Decode+crop processes (0: in-process) \\[default: min(2, cpus)]."),
    shard: str = typer.Option("0/1", "--shard", help="Take the images whose stable hash mod n == i (i/n)."),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Crops per upsert (and per encoder call on a GPU)."),
    shards: int = typer.Option(None, "--shards", envvar="QDRANT_SHARDS", min=1, help="Server only: shards of a new collection; default: the server's."),
    replication_factor: int = typer.Option(None, "--replication-factor", envvar="QDRANT_REPLICATION_FACTOR", min=1, help="Server only: copies of each shard of a new collection (cluster); default: the server's."),
    write_consistency: int = typer.Option(None, "--write-consistency", envvar="QDRANT_WRITE_CONSISTENCY", min=1, help="Server only: replicas that must acknowledge a write; default: the server's."),
    since: str = typer.Option(None, "--since", help="DICOMweb only: studies on or after this date (YYYY-MM-DD)."),
    modality: list[str] = typer.Option([], "--modality", help="DICOMweb only: CR and/or DX (repeatable) \\[default: both]."),
    study: str = typer.Option(None, "--study", help="DICOMweb only: one StudyInstanceUID."),
    scene_graphs: Path = typer.Option(None, "--scene-graphs", exists=True, file_okay=False, help="DICOMweb only: folder of <SOPInstanceUID>_SceneGraph.json boxes \\[default: the localizer]."),
    report: Path = typer.Option(None, "--report", help="JSONL report of failed/unlabeled images \\[default: $REGIONMIR_HOME/reports/]."),
    hash_paths: bool = typer.Option(False, "--hash-paths", help="A new collection stores paths and image ids only as salted hashes (no folder or file name; montages then cannot show hits); a collection made so keeps it."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON only."),
) -> None:
    """Ingest ARCHIVE: every labeled region of every DICOM becomes a point in the collection.

    Rerunning resumes: images already ingested are skipped, ids never duplicate.

    A DICOMweb ARCHIVE is searched with QIDO-RS for CR/DX series and read with WADO-RS;
    credentials come from REGIONMIR_DICOMWEB_TOKEN or REGIONMIR_DICOMWEB_USER/PASSWORD.

    --shards, --replication-factor and --write-consistency lay out a new collection on a Qdrant server.
    """
    import json
    from functools import partial

    from regionmir import config
    from regionmir.ingest.runner import IngestConfig, run_ingest
    from regionmir.ingest.sources import parse_shard
    from regionmir.pacs.dicomweb import is_url

    try:
        shard_ = parse_shard(shard)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--shard") from None
    config.require_home()  # ledgers and reports live there even for a Qdrant server
    source, folder = None, None
    if is_url(archive):
        from regionmir.pacs.source import dicomweb_source

        source = dicomweb_source(archive, since, modality, study, scene_graphs, shard_)
    else:
        folder = Path(archive)
        if since or modality or study or scene_graphs:
            raise typer.BadParameter("--since, --modality, --study and --scene-graphs apply to a DICOMweb URL "
                                     "only; drop them for a folder", param_hint="ARCHIVE")
        if not folder.is_dir():
            raise typer.BadParameter(f"{archive} is not a folder (nor an http(s)://host:port/dicom-web DICOMweb "
                                     "root)", param_hint="ARCHIVE")
    cfg = IngestConfig(
        archive=folder, model=model, collection=collection or config.DEFAULT_COLLECTION,
        qdrant_url=qdrant_url or None, api_key=config.qdrant_api_key(), shard=shard_,
        batch_size=batch_size, report=report, shards=shards,
        replication_factor=replication_factor, write_consistency=write_consistency, hash_paths=hash_paths,
        **({} if workers is None else {"workers": workers}),
    )
    run = partial(run_ingest, source=source)
    try:
        if as_json:
            summary = run(cfg)
            typer.echo(json.dumps(summary.as_dict()))
            return
        summary = _with_progress(cfg, run)
    finally:
        if source is not None:
            source.close()
    _print_summary(summary)


def _with_progress(cfg, run):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"), TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=console, transient=False)
    task = bar.add_task("ingest", total=None, rates="")

    def update(s, total):
        if not bar.live.is_started:  # shown from the first image on: a setup error stays one line
            bar.start()
        done = s.ingested + s.failed + s.unlabeled + s.duplicates
        rates = f"{s.images_per_s:.1f} img/s  {s.regions_per_s:.0f} regions/s"
        bar.update(task, total=total, completed=done, rates=rates)

    try:
        return run(cfg, on_progress=update)
    finally:
        if bar.live.is_started:
            bar.stop()


def _print_summary(s) -> None:
    """Print the summary; names the user chose (collection, store and report paths) are shown as
    written: ``escape`` keeps a ``[/x]`` in them from being read as Rich markup."""
    from rich.console import Console
    from rich.markup import escape

    c = Console()
    c.print(
        f"[bold]{escape(s.collection)}[/] ({escape(s.store)}): {s.images} images in this shard, "
        f"{s.ingested} ingested ({s.regions} regions), {s.skipped} skipped (already done), "
        f"{s.unlabeled} unlabeled, {s.failed} failed, {s.duplicates} duplicate(s) "
        f"in {s.seconds:.1f} s ({s.images_per_s:.1f} images/s, {s.regions_per_s:.0f} regions/s)",
        highlight=False,
    )
    if s.failed or s.unlabeled or s.duplicates or s.warnings:
        extra = f" ({s.warnings} ingested with warnings)" if s.warnings else ""
        c.print(f"Failed, unlabeled and duplicate images{extra} are listed in {escape(str(s.report))}", highlight=False)
