"""Localizer training: archive -> augmented letterboxed films -> LocalizerNet -> localizer.onnx + report.

``train_localizer`` is what ``regionmir train-localizer`` runs: load the frontal films of the
train split, fit the network (AdamW, one-cycle schedule), export it to ONNX with its
:class:`~regionmir.inference.meta.ModelMeta` (kind ``localizer``), then evaluate the exported file
with onnxruntime on the test (else valid) split and write ``localizer_report.{json,md}``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from regionmir.anatomy import BOXED, Anatomy
from regionmir.archive import Archive
from regionmir.errors import AnnotationError, ModelError
from regionmir.inference.folder import LOCALIZER_FILE
from regionmir.inference.localizer import BOX_FORMAT, LETTERBOX, Localizer
from regionmir.inference.meta import ModelMeta, model_id_of
from regionmir.train.localizer.augment import AugmentConfig
from regionmir.train.localizer.data import Film, batches, load_films, template
from regionmir.train.localizer.model import LocalizerNet, calibrate, export_onnx, localizer_loss
from regionmir.train.loop import set_threads
from regionmir.train.progress import Progress

log = logging.getLogger("regionmir")

NORM_MEAN, NORM_STD = 0.5, 0.25  # (x - mean) / std on the [0, 1] letterboxed canvas


@dataclass(frozen=True)
class LocalizerConfig:
    """How to train a localizer; the CLI options map onto these fields."""

    size: int = 128  # letterbox side S (multiple of 32)
    epochs: int = 100
    batch_size: int = 16
    lr: float = 3e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    width: int = 16  # first-stage channels of LocalizerNet
    refine: bool = True  # second stage: correct each box from stride-8 features around it
    seed: int = 0
    device: str = "auto"  # torch device for training: auto, cpu, cuda
    threads: int = 0  # torch CPU threads; 0 = idle CPUs (loop.auto_threads)
    limit: int | None = None  # at most this many films per split (quick runs, tests)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    real: str = ""  # real-film folder (films.csv): its train films with lung (and heart) truth join training


def torch_device(name: str) -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else cpu.

    Raises:
        ModelError: ``cuda`` asked for where torch has none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but torch sees no CUDA GPU. Use --device cpu.")
    if name not in ("cpu", "cuda"):
        raise ModelError(f"Unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def fit(films: list[Film], cfg: LocalizerConfig, progress: Progress = Progress()) -> LocalizerNet:
    """Train a LocalizerNet on ``films`` with fresh augmentations every epoch."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch_device(cfg.device)
    set_threads(cfg.threads)
    model = LocalizerNet(cfg.size, torch.from_numpy(template(films, cfg.size)), cfg.width,
                         refine=cfg.refine).to(device)
    steps_per_epoch = -(-len(films) // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15)
    progress.phase("localizer", cfg.epochs * steps_per_epoch, cfg.epochs, unit="films")
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        total = 0.0
        for x, target, mask in batches(films, cfg.size, cfg.batch_size, cfg.augment, rng):
            start = time.perf_counter()
            x = ((x - NORM_MEAN) / NORM_STD).to(device)  # (B, 1, S, S)
            coarse, boxes, logits = model.stages(x)
            loss, _ = localizer_loss(boxes, model.confidence(logits), target.to(device), mask.to(device), coarse)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            progress.step(epoch, loss.item(), len(x) / max(time.perf_counter() - start, 1e-9))
            total += loss.item()
        log.info("localizer epoch %d/%d: mean loss %.4f", epoch, cfg.epochs, total / steps_per_epoch)
    return model.eval().cpu()


def calibrate_on(model: LocalizerNet, archive: Archive, cfg: LocalizerConfig) -> list[float] | None:
    """Platt-scale the confidence on the valid split (un-augmented); None when it has no films."""
    try:
        films = load_films(archive, "valid", cfg.size, cfg.limit)
    except AnnotationError:
        return None
    x, target, mask = next(batches(films, cfg.size, len(films), AugmentConfig.off(), np.random.default_rng(0)))
    return list(calibrate(model, (x - NORM_MEAN) / NORM_STD, target, mask))


def write_model(model: LocalizerNet, cfg: LocalizerConfig, fingerprint: str, path: Path) -> ModelMeta:
    """Export ``model`` to ``path`` with its ModelMeta and letterbox description in metadata_props."""
    import onnx

    graph = export_onnx(model, cfg.size)
    meta = ModelMeta(
        model_id=model_id_of(graph), kind="localizer", input_size=cfg.size, channels=1,
        crop_context=0.0, norm_mean=NORM_MEAN, norm_std=NORM_STD,
        anatomies=tuple(a.slug for a in BOXED), embedding_dim=0,
        backbone=f"stridecnn-w{cfg.width}", strategy="box-regression+roi-refine+iou-head" if cfg.refine
        else "box-regression+iou-head",
        archive_fingerprint=fingerprint,
    )
    proto = onnx.load_from_string(graph)
    props = {**meta.to_props(), "letterbox": LETTERBOX, "box_format": BOX_FORMAT}
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return meta


def train_localizer(archive_path: str | Path, out_dir: str | Path, cfg: LocalizerConfig = LocalizerConfig(),
                    progress: Progress = Progress()) -> dict:
    """Train, export and evaluate; returns the report (also written beside the model).

    Raises:
        AnnotationError: the archive has no train split or no frontal film with boxes.
    """
    from regionmir.train.data import eval_split, fingerprint
    from regionmir.train.localizer.eval import evaluate, markdown

    archive = Archive(archive_path)
    out = Path(out_dir)
    start = time.perf_counter()
    progress.note("loading films")
    films = load_films(archive, "train", cfg.size, cfg.limit)
    n_real = n_hearts = 0
    if cfg.real:
        from regionmir.train.localizer.real import real_films

        real = real_films(cfg.real, cfg.size, cfg.limit)
        films, n_real = films + real, len(real)
        n_hearts = sum(bool(f.present[BOXED.index(Anatomy.CARDIAC_SILHOUETTE)]) for f in real)
        progress.note(f"{n_real} real films with lung boxes join training ({n_hearts} with a heart box)")
    fp = fingerprint(sg for _, sg in archive.iter_split("train"))
    model = fit(films, cfg, progress)
    try:
        split = eval_split(archive)
    except AnnotationError:
        split = None  # nothing held out: the report has training facts only
    calibration = calibrate_on(model, archive, cfg) if split == "test" else None
    train_s = time.perf_counter() - start
    meta = write_model(model, cfg, fp, out / LOCALIZER_FILE)
    report = {"model_id": meta.model_id, "archive": str(archive.root), "archive_fingerprint": fp,
              "train_images": len(films), "real_train_images": n_real,
              "real_train_hearts": n_hearts, "train_seconds": round(train_s, 1),
              "config": {k: v for k, v in asdict(cfg).items() if k != "augment"},
              "calibration_ab": calibration}
    if split is not None:
        progress.note(f"evaluating on {split}")
        report.update(evaluate(Localizer(out / LOCALIZER_FILE, device="cpu"), archive, split, cfg.limit))
        (out / "localizer_report.md").write_text(markdown(report))
    (out / "localizer_report.json").write_text(json.dumps(report, indent=1))
    return report
