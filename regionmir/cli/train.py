"""`regionmir train ARCHIVE --out MODEL_DIR`: train, compare and export the region encoder."""

from __future__ import annotations

import enum
from pathlib import Path

import typer


class Strategy(str, enum.Enum):
    regionmir = "regionmir"
    scratch = "scratch"
    cotrain = "cotrain"
    all = "all"


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Contrastive(str, enum.Enum):
    ntxent = "ntxent"
    supcon = "supcon"


def train(
    archive: Path = typer.Argument(..., exists=True, file_okay=False, help="Archive folder (MIMIC-CXR + Chest ImaGenome layout)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (encoder.onnx, report.md, report.json)."),
    strategy: Strategy = typer.Option(Strategy.regionmir, help="regionmir = contrastive pretrain + fine-tune; scratch; cotrain; all = train and compare the three, export regionmir."),
    epochs: int = typer.Option(6, min=0, help="Classification (fine-tuning) epochs."),
    pretrain_epochs: int = typer.Option(6, min=0, help="Contrastive pretraining epochs (scratch/cotrain train epochs + pretrain-epochs)."),
    batch_size: int = typer.Option(256, min=2),
    crop_size: int = typer.Option(64, min=16, help="Crop side in pixels."),
    crop_context: float = typer.Option(0.1, min=0.0, max=2.0, help="Context added on each side of a box, as a fraction of its longer side, to make the square crop window."),
    backbone: str = typer.Option("resnet10-w16", help="resnet18|resnet34|resnet50|resnet101 or small resnet10-w16, resnet6-w8, ..."),
    embedding_dim: int = typer.Option(128, min=1, max=512),
    lr: float = typer.Option(3e-3, help="Peak AdamW learning rate."),
    contrastive: Contrastive = typer.Option(Contrastive.ntxent, help="ntxent (self-supervised) or supcon (uses labels)."),
    device: Device = typer.Option(Device.auto),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, min=0, help="CPU threads for torch (0 = the CPUs not busy with other work, at least 1)."),
    domain_randomize: bool = typer.Option(False, "--domain-randomize/--no-domain-randomize", help="Randomize the processing look (tone curve, equalization, sharpening) in every augmentation."),
    real: Path = typer.Option(None, "--real", exists=True, file_okay=False, help="Real films: a folder with films.csv (its train split), or any folder of DICOM/PNG/JPEG films (all, unlabeled; needs --real-localizer). Their region crops join the self-supervised pretraining."),
    real_localizer: Path = typer.Option(None, "--real-localizer", exists=True, help="Localizer (model folder or .onnx) that places the regions without human boxes (all but lungs and heart) on the --real films."),
    real_labels: bool = typer.Option(False, "--real-labels", help="With --real: the real crops also join fine-tuning, named by their box (true lung and heart boxes; the --real-localizer's anatomy for the rest: pseudo-labels)."),
    cache: Path = typer.Option(None, "--cache", help="Crop cache folder (default OUT/crop-cache): crops are cut once, resumably, and streamed from disk."),
    loader_workers: int = typer.Option(1, min=0, help="DataLoader processes reading cached crops ahead of training."),
    as_json: bool = typer.Option(False, "--json", help="Print the report JSON on stdout only."),
) -> None:
    """Train the region encoder on ARCHIVE, evaluate it on the held-out split and export it to OUT.

    A stopped run resumes: crops already cut are kept in the cache, and training continues
    from the last finished epoch (OUT/checkpoints) when the settings are the same.
    """
    import json

    from rich.console import Console

    try:
        from regionmir.train import TrainConfig, run
        from regionmir.train.progress import RichProgress
        from regionmir.train.report import print_summary
    except ImportError as e:
        from regionmir.errors import MissingDependencyError

        raise MissingDependencyError(e.name or "torch", "train", "`regionmir train`") from None

    cfg = TrainConfig(
        strategy=strategy.value, epochs=epochs, pretrain_epochs=pretrain_epochs, batch_size=batch_size,
        crop_size=crop_size, crop_context=crop_context, backbone=backbone, embedding_dim=embedding_dim, lr=lr,
        contrastive=contrastive.value, device=device.value, seed=seed, threads=threads,
        domain_randomize=domain_randomize, real=str(real or ""), real_localizer=str(real_localizer or ""),
        real_labels=real_labels, loader_workers=loader_workers, cache=str(cache) if cache else None,
    )
    with RichProgress(enabled=not as_json) as progress:
        report = run(archive, out, cfg, progress)
    if as_json:
        typer.echo(json.dumps(report))
        return
    console = Console()
    print_summary(report, console)
    console.print(f"model {report['model']['model_id']} -> {out / 'encoder.onnx'}; report {out / 'report.md'}"
                  f" ({report['total_seconds']:.0f} s)")
