"""One training run end to end: archive -> crops -> strategies -> evaluation -> ONNX export -> report."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from regionmir.archive import Archive
from regionmir.errors import AnnotationError, ModelError
from regionmir.inference.folder import ENCODER_FILE as MODEL_FILE
from regionmir.inference.folder import REPORT_FILE
from regionmir.inference.meta import ModelMeta
from regionmir.train import report as reports
from regionmir.train.cache import DiskCrops, cut_split
from regionmir.train.checkpoint import Checkpoint
from regionmir.train.data import eval_split
from regionmir.train.export import export_encoder
from regionmir.train.loop import STRATEGIES, TrainConfig, pick_device, predict, set_threads, train_strategy
from regionmir.train.models import check_backbone
from regionmir.train.progress import Progress
from regionmir.train.splits import SplitScan, scan_split
from regionmir.train.tally import Tally


def strategies_of(cfg: TrainConfig) -> tuple[str, ...]:
    """The strategies a config trains (``all`` = the three, regionmir first); checks the config
    before any image is read.

    Raises:
        ModelError: unknown strategy, contrastive loss or backbone.
    """
    check_backbone(cfg.backbone)
    if cfg.contrastive not in ("ntxent", "supcon"):
        raise ModelError(f"Unknown contrastive loss {cfg.contrastive!r}; use ntxent or supcon")
    if cfg.real_labels and not cfg.real:
        raise ModelError("--real-labels names the crops of the real films; give the folder with --real FOLDER.")
    if cfg.strategy == "all":
        return STRATEGIES
    if cfg.strategy not in STRATEGIES:
        raise ModelError(f"Unknown strategy {cfg.strategy!r}; use {', '.join(STRATEGIES)} or all")
    return (cfg.strategy,)


def cache_dir(cfg: TrainConfig, out_dir: str | Path) -> Path:
    """Where the crop cache lives: ``cfg.cache``, else ``OUT/crop-cache``."""
    return Path(cfg.cache).expanduser() if cfg.cache else Path(out_dir) / "crop-cache"


def _crops(scan: SplitScan, classes, cfg: TrainConfig, views: int, label: str, progress: Progress,
           folder: Path, name: str, dtype=np.float16) -> DiskCrops:
    progress.phase(label, len(scan), 1)
    start, made = time.perf_counter(), [0]

    def tick(n: int) -> None:
        made[0] += n
        progress.step(1, float("nan"), made[0] / (time.perf_counter() - start))

    return cut_split(scan, classes, cfg.crop_spec(), folder, name, jitter_views=views, seed=cfg.seed,
                     dtype=dtype, on_image=tick, note=progress.note)


def load_data(archive: Archive, cfg: TrainConfig, progress: Progress,
              folder: Path) -> tuple[DiskCrops, DiskCrops, dict]:
    """Training and held-out crops, cut once into the cache ``folder``, plus facts for the report.

    The splits are listed by :func:`scan_split` (one scene graph in memory at a time), so memory
    does not grow with the archive.

    Raises:
        AnnotationError: no training images with scene graphs, or no held-out split.
    """
    train_scan = scan_split(archive, "train")
    if not len(train_scan):
        raise AnnotationError(f"{archive.root}: the train split has no images with scene graphs")
    held_out = eval_split(archive)
    eval_scan = scan_split(archive, held_out)
    classes = train_scan.classes()
    train = _crops(train_scan, classes, cfg, cfg.jitter_views, "cropping train", progress, folder, "train")
    # held-out crops in float32: exactly what inference sees
    held = _crops(eval_scan, classes, cfg, 0, f"cropping {held_out}", progress, folder, held_out, np.float32)
    facts = {
        "archive": str(archive.root), "archive_fingerprint": train_scan.fingerprint,
        "eval_split": held_out, "train_images": len(train_scan), "eval_images": len(eval_scan),
        "train_crops": len(train), "eval_crops": len(held),
    }
    return train, held, facts


def run(archive_root: str | Path, out_dir: str | Path, cfg: TrainConfig = TrainConfig(),
        progress: Progress | None = None) -> dict:
    """Train ``cfg.strategy`` (or all three), evaluate on the held-out split, export, write reports.

    Returns:
        The report dict (also in ``out_dir/report.json``); ``report["model"]`` is the exported
        ModelMeta as a dict.

    Raises:
        AnnotationError: the archive lacks usable splits. ModelError: bad config.
    """
    progress = progress or Progress()
    names = strategies_of(cfg)
    device = pick_device(cfg.device)
    threads = set_threads(cfg.threads)
    archive = Archive(archive_root)
    t0 = time.perf_counter()
    folder = cache_dir(cfg, out_dir)
    train, held, facts = load_data(archive, cfg, progress, folder)
    load_s = time.perf_counter() - t0
    spec, results, models, checkpoints = cfg.crop_spec(), {}, {}, []
    pretrain = _with_real(train, cfg, progress) if cfg.real else None
    if pretrain is not None:
        facts["real_pretrain_crops" if not cfg.real_labels else "real_labeled_crops"] = len(pretrain) - len(train)
    fine = pretrain if cfg.real_labels else train
    for name in names:
        t1 = time.perf_counter()
        checkpoint = Checkpoint(Path(out_dir) / "checkpoints" / f"{name}.pt", run_key(cfg, facts))
        model, history = train_strategy(name, fine, cfg, device, progress, checkpoint, pretrain)
        checkpoints.append(checkpoint)
        seconds = time.perf_counter() - t1
        progress.note(f"evaluating {name} on the {facts['eval_split']} split ({len(held)} crops)")
        results[name] = evaluate_rows(model, held, spec.mean, spec.std, device)
        results[name].update(train_seconds=seconds, loss_history=history)
        models[name] = model
        progress.note(f"{name}: accuracy {100 * results[name]['accuracy']:.2f}% in {seconds:.0f} s")
    exported = "regionmir" if "regionmir" in models else names[0]
    meta = ModelMeta(
        model_id="", kind="encoder", input_size=spec.size, channels=1, crop_context=spec.context,
        norm_mean=spec.mean, norm_std=spec.std, anatomies=tuple(a.slug for a in train.classes),
        embedding_dim=cfg.embedding_dim, backbone=cfg.backbone, strategy=exported,
        archive_fingerprint=facts["archive_fingerprint"],
    )
    meta, baselines = export_models(models, exported, meta, Path(out_dir))
    report = {
        **facts, "exported_strategy": exported, "model": dataclasses.asdict(meta), "baselines": baselines,
        "config": dataclasses.asdict(cfg), "device": str(device), "torch_threads": threads,
        "crop_cache": str(folder),
        "data_seconds": load_s, "total_seconds": time.perf_counter() - t0, "results": results,
    }
    reports.write(report, out_dir)
    for name in baselines:  # `regionmir evaluate` reads results beside each encoder
        (Path(out_dir) / name / REPORT_FILE).write_text(json.dumps(report, indent=1))
    for checkpoint in checkpoints:  # exported: the next run starts afresh (the crop cache stays)
        checkpoint.remove()
    return report


def evaluate_rows(model, crops, mean: float, std: float, device, chunk: int = 1024) -> dict:
    """Scores of ``model`` on the clean crops of ``crops`` (a ``DiskCrops`` or ``CropSet``), read,
    predicted and tallied ``chunk`` rows at a time: memory does not grow with the split."""
    tally = Tally(crops.classes, len(crops))
    for start in range(0, len(crops), chunk):
        emb, logits = predict(model, crops.clean_rows(start, start + chunk), mean, std, device)  # (b, D), (b, C)
        tally.add(emb, logits, crops.labels[start : start + chunk])
    return tally.result()


def _with_real(train, cfg: TrainConfig, progress: Progress):
    """Phantom training crops (in memory or the disk cache) plus crops of the real train films:
    unlabeled for NT-Xent, or named by their boxes with ``cfg.real_labels``.

    Raises:
        ModelError: ``--real`` unlabeled with ``--contrastive supcon``, which would need labels.
    """
    from regionmir.train.realcrops import merged, real_cropset

    if cfg.contrastive == "supcon" and not cfg.real_labels:
        raise ModelError("--real adds unlabeled real crops; use it with --contrastive ntxent, not supcon "
                         "(or name them with --real-labels).")
    progress.note(f"cropping real films of {cfg.real} (train split) for "
                  f"{'pretraining and fine-tuning' if cfg.real_labels else 'pretraining'}")
    real = real_cropset(cfg.real, train.classes, cfg.crop_spec(), cfg.real_localizer or None,
                        views=cfg.jitter_views, seed=cfg.seed, labeled=cfg.real_labels)
    return merged(train, real)


def run_key(cfg: TrainConfig, facts: dict) -> dict:
    """What a checkpoint must match to be resumed: the settings that shape training, and the data."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("device", "threads", "loader_workers", "cache")}
    return {**settings, "archive_fingerprint": facts["archive_fingerprint"], "train_crops": facts["train_crops"]}


def export_models(models: dict, exported: str, meta: ModelMeta, out_dir: Path) -> tuple[ModelMeta, dict]:
    """Export ``models[exported]`` as ``out_dir/encoder.onnx`` and every other strategy as a
    baseline ``out_dir/<strategy>/encoder.onnx`` (for `regionmir evaluate` to compare).

    Returns:
        The main model's metadata, and ``{strategy: {"path", "model_id"}}`` of the baselines.
    """
    main = export_encoder(models[exported], out_dir / MODEL_FILE, meta)
    baselines = {}
    for name, model in models.items():
        if name != exported:
            rel = f"{name}/{MODEL_FILE}"
            written = export_encoder(model, out_dir / rel, dataclasses.replace(meta, strategy=name))
            baselines[name] = {"path": rel, "model_id": written.model_id}
    return main, baselines
