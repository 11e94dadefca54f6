"""`regionmir demo`: the whole pipeline on the embedded default, as the commands a user would type.

phantom archive -> train the encoder -> train the localizer -> ingest -> search (table + montage).
Each stage is run as its own `regionmir` command, printed before it runs, so the demo doubles
as a tutorial. Stages whose output already exists are skipped unless --fresh is given.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer


def demo(
    workdir: Path = typer.Option(None, "--workdir", help="Where the archive and outputs go \\[default: $REGIONMIR_HOME/demo]."),
    patients: int = typer.Option(120, min=3, help="Phantom patients (each with --studies-per-patient studies)."),
    studies_per_patient: int = typer.Option(2, min=1),
    size: int = typer.Option(512, min=64, help="Long side of the phantom images in pixels."),
    seed: int = typer.Option(0),
    localizer: bool = typer.Option(True, "--localizer/--no-localizer", help="Also train the anatomy localizer and search a real chest film."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete earlier demo outputs first."),
) -> None:
    """Run phantom -> train (encoder, localizer) -> ingest -> search on the embedded store and show the results."""
    from rich.console import Console

    from regionmir import config
    from regionmir.inference.folder import ModelFolder

    console = Console()
    work = workdir or config.home() / "demo"
    archive, model = work / "archive", config.default_model_dir()
    folder = ModelFolder(model)
    if fresh:
        for path in (work, model, config.default_store_dir()):
            shutil.rmtree(path, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t0, times = time.perf_counter(), {}
    t_stage = t0

    def stage(name: str, done: bool, *args: str) -> None:
        nonlocal t_stage
        if done:
            console.print(f"[dim]{name}: already done, skipped (--fresh to redo)[/]")
            return
        _run(console, *args)
        times[name] = time.perf_counter() - t_stage
        t_stage = time.perf_counter()

    stage("phantom", (archive / "splits" / "test.csv").is_file(), "phantom", str(archive),
          "--patients", str(patients), "--studies-per-patient", str(studies_per_patient),
          "--size", str(size), "--seed", str(seed), "--workers", "2", "--preview", "4")
    stage("train", folder.has("encoder"), "train", str(archive), "--out", str(model),
          "--seed", str(seed))
    if localizer:
        stage("train-localizer", folder.has("localizer"), "train-localizer",
              str(archive), "--out", str(model), "--seed", str(seed))
    stage("ingest", False, "ingest", str(archive))
    query, anatomy = _pick_query(archive)
    montage = work / "montage.png"
    stage("search", False, "search", "--anatomy", anatomy, str(query), "--montage", str(montage))
    real = _real_film() if localizer else None
    if real is not None:
        stage("search-real", False, "search", "--anatomy", "left-lung", str(real),
              "--montage", str(work / "montage_real_film.png"))
    total = time.perf_counter() - t0
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    console.print(f"\n[bold green]Demo done[/] in {total:.0f} s ({steps}).")
    console.print(f"Archive previews: {archive / 'preview'}   Montage: {montage}")
    console.print(f"Model report: {model / 'report.md'}   Try: regionmir search --help")


def _run(console, *args: str) -> None:
    """Run one `regionmir` command in a child process, echoing it first; stop on failure."""
    shown = "regionmir " + " ".join(shlex.quote(a) for a in args)
    console.rule(f"[bold cyan]$ {shown}", align="left")
    done = subprocess.run([sys.executable, "-m", "regionmir", *args])
    if done.returncode != 0:
        from regionmir.errors import RegionMIRError

        raise RegionMIRError(f"`{shown}` failed (exit {done.returncode}); see its output above.")


def _pick_query(archive: Path) -> tuple[Path, str]:
    """A test-split image with a finding in a lung region (else any test image's left lung)."""
    from regionmir.archive import Archive

    arch = Archive(archive)
    first = None
    for path, sg in arch.iter_split("test"):
        first = first or path
        for region in sg.regions:
            if region.findings and region.anatomy.slug.endswith("lung"):
                return path, region.anatomy.slug
    if first is None:
        from regionmir.errors import AnnotationError

        raise AnnotationError(f"{archive} has no test images with scene graphs to query with.")
    return first, "left-lung"


def _real_film() -> Path | None:
    """The real chest CR shipped by pydicom-data, when installed (no download)."""
    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file("RG1_UNCR.dcm", download=False)
    except Exception:  # pydicom-data not installed: skip the real-film search
        return None
    return Path(path) if path else None
