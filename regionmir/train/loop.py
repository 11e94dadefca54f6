"""Training strategies on in-memory crop sets: regionmir (contrastive pretrain + fine-tune), scratch, cotrain.

All three get the same budget of ``pretrain_epochs + epochs`` passes over the training crops:
- ``regionmir``: ``pretrain_epochs`` of self-supervised contrastive learning on region crops
  (two augmented views of each crop are positives), then ``epochs`` of anatomy classification.
- ``scratch``: supervised anatomy classification from random init for the whole budget.
- ``cotrain``: contrastive + classification losses summed, for the whole budget.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from regionmir.errors import ModelError
from regionmir.regions import CropSpec
from regionmir.train.augment import LIGHT, AugmentConfig, DomainConfig, augment, to_input
from regionmir.train.batches import BatchSet, epoch_order, loader, two_views
from regionmir.train.checkpoint import Checkpoint
from regionmir.train.data import CropSet
from regionmir.train.losses import nt_xent, supcon
from regionmir.train.models import RegionEncoder
from regionmir.train.progress import Progress

STRATEGIES = ("regionmir", "scratch", "cotrain")
_PHASE_SEED = {"contrastive": 1, "supervised": 2, "cotrain": 3}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; the CLI options map onto these fields."""

    strategy: str = "regionmir"  # regionmir | scratch | cotrain | all
    epochs: int = 6  # classification (fine-tuning) epochs
    pretrain_epochs: int = 6  # contrastive epochs of regionmir; scratch/cotrain get epochs + these
    batch_size: int = 256
    crop_size: int = 64  # CropSpec.size
    crop_context: float = 0.1  # CropSpec.context
    backbone: str = "resnet10-w16"
    embedding_dim: int = 128
    lr: float = 3e-3  # AdamW peak learning rate (one-cycle schedule)
    weight_decay: float = 1e-4
    temperature: float = 0.2  # contrastive softmax temperature
    contrastive: str = "ntxent"  # ntxent (self-supervised, default) | supcon (uses labels)
    jitter_views: int = 3  # jittered-box crops per region besides the exact one
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = idle CPUs (see loop.auto_threads)
    domain_randomize: bool = False  # random processing looks in every augmentation (augment.domain); measured no help on real lungs
    real: str = ""  # folder of real films (films.csv): train-split lung/localizer crops join pretraining
    real_localizer: str = ""  # localizer (model folder or .onnx) placing the other regions on real films
    real_labels: bool = False  # real crops also join fine-tuning, named by their box (truth or localizer)
    loader_workers: int = 1  # DataLoader processes reading cached crops ahead of the trainer
    cache: str | None = None  # crop cache folder; None: OUT/crop-cache

    def crop_spec(self) -> CropSpec:
        """The crop definition the model is trained with (and exported with)."""
        return CropSpec(size=self.crop_size, context=self.crop_context)


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else cpu; sets CPU threads.

    Raises:
        ModelError: ``cuda`` asked for where torch sees no GPU.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but torch sees no CUDA GPU. Use --device cpu.")
    if name not in ("auto", "cpu", "cuda"):
        raise ModelError(f"Unknown device {name!r}; use auto, cpu or cuda")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def auto_threads() -> int:
    """CPUs this process may use minus those busy with other work right now, at least 1.

    On a shared machine two OpenMP threads fighting other processes for two cores train 2-3x
    slower than one thread (each barrier waits for a descheduled thread), so a busy machine
    gets fewer threads; an idle one gets all its cores. "Right now" is a 0.3 s sample of
    ``/proc/stat`` (the 1-minute load average, the fallback elsewhere, still counts work that
    has just ended, such as the phantom step before a demo's training).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = busy_cpus()
    return max(1, min(cpus, cpus - int(busy + 0.5)))


def busy_cpus(seconds: float = 0.3) -> float:
    """How many CPUs other processes keep busy: from two ``/proc/stat`` samples ``seconds``
    apart, else the 1-minute load average, else 0."""
    def sample():
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cpus = os.cpu_count() or 1
    return cpus * (1 - (idle1 - idle0) / max(1, total1 - total0))


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads for torch (0: :func:`auto_threads`); returns the number set."""
    torch.set_num_threads(max(1, threads or auto_threads()))
    return torch.get_num_threads()


def _inputs(x: torch.Tensor, aug: AugmentConfig, mean: float, std: float,
            dom: DomainConfig | None = None) -> torch.Tensor:
    """Augmented [0, 1] crops -> normalized network input ``(B, 1, S, S)``."""
    return to_input(augment(x, aug, dom), mean, std).contiguous(memory_format=torch.channels_last)


def _contrastive(z: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The configured contrastive loss of stacked views ``z`` (2B, P), labels ``y`` (B,)."""
    z1, z2 = z.chunk(2)  # (B, P) each
    if cfg.contrastive == "supcon":
        return supcon(z, torch.cat([y, y]), cfg.temperature)
    return nt_xent(z1, z2, cfg.temperature)


def loss_fn(kind: str, cfg: TrainConfig, mean: float, std: float) -> Callable:
    """``(model, x1, x2, y) -> scalar loss`` for a phase kind: contrastive | supervised | cotrain."""

    dom = DomainConfig() if cfg.domain_randomize else None

    def contrastive(model, x1, x2, y):
        x = _inputs(torch.cat([x1, x2]), AugmentConfig(), mean, std, dom)  # (2B, 1, S, S)
        return _contrastive(model.projection(x).float(), y, cfg)  # losses in float32 under autocast

    def supervised(model, x1, x2, y):
        _, logits = model(_inputs(x1, LIGHT, mean, std, dom))  # (B, C)
        return F.cross_entropy(logits.float(), y)

    def cotrain(model, x1, x2, y):
        x = _inputs(torch.cat([x1, x2]), AugmentConfig(), mean, std, dom)  # (2B, 1, S, S)
        feats = model.features(x)  # (2B, D)
        z = model.project(feats).float()  # (2B, P)
        logits = model.classify(F.normalize(feats, dim=1)).float()  # (2B, C)
        return _contrastive(z, y, cfg) + F.cross_entropy(logits, torch.cat([y, y]))

    return {"contrastive": contrastive, "supervised": supervised, "cotrain": cotrain}[kind]


def fit(model: RegionEncoder, crops, kind: str, epochs: int, cfg: TrainConfig, device: torch.device,
        progress: Progress, label: str, resume: dict | None = None,
        on_epoch: Callable[[int, list[float], dict], None] | None = None) -> list[float]:
    """Train ``model`` in place for ``epochs`` with the loss of ``kind``; returns mean loss per epoch.

    ``crops`` is a ``CropSet`` or a ``DiskCrops`` (streamed by ``cfg.loader_workers`` DataLoader
    workers). On CUDA the forward pass runs in float16 autocast with a gradient scaler.
    ``resume`` (``{"epoch", "history", "opt", "sched", "scaler"}``) continues after its epoch;
    ``on_epoch(epoch, history, states)`` is called after each epoch (to write a checkpoint).
    """
    if epochs <= 0:
        return []
    phase = _PHASE_SEED[kind]
    batches = BatchSet(crops, min(cfg.batch_size, len(crops)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = len(batches) * epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history, first = [], 1
    if resume:
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        if amp and resume["scaler"]:  # empty when saved by a CPU run (no scaler there)
            scaler.load_state_dict(resume["scaler"])
        history, first = list(resume["history"]), int(resume["epoch"]) + 1
    spec = cfg.crop_spec()
    compute = loss_fn(kind, cfg, spec.mean, spec.std)
    workers = cfg.loader_workers if not isinstance(crops, CropSet) else 0  # in memory: nothing to read ahead
    progress.phase(label, total, epochs)
    seen, start = 0, time.perf_counter()
    model.train()
    for epoch in range(first, epochs + 1):
        batches.order = epoch_order(len(crops), cfg.seed, phase, epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + phase * 100 + epoch)  # view picks
        torch.manual_seed(cfg.seed * 1000 + phase * 100 + epoch)  # augmentations
        losses = []
        for views, y in loader(batches, workers, device):
            x1, x2 = two_views(views, gen, device)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = compute(model, x1, x2, y)
            value = loss.item()
            if not math.isfinite(value):
                raise ModelError(f"{label}: loss became {value}; lower --lr or raise --batch-size")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(value)
            seen += len(y) * (1 if kind == "supervised" else 2)
            progress.step(epoch, float(np.mean(losses)), seen / (time.perf_counter() - start))
        history.append(float(np.mean(losses)))
        if on_epoch:
            on_epoch(epoch, history, {"opt": opt.state_dict(), "sched": sched.state_dict(),
                                      "scaler": scaler.state_dict()})
    return history


def new_model(cfg: TrainConfig, classes: int, device: torch.device) -> RegionEncoder:
    """A freshly initialised encoder (seeded: every strategy starts from the same weights)."""
    torch.manual_seed(cfg.seed)
    model = RegionEncoder(cfg.backbone, cfg.embedding_dim, classes)
    return model.to(device).to(memory_format=torch.channels_last)


def phases(strategy: str, cfg: TrainConfig) -> list[tuple[str, str, int, str]]:
    """``(history key, loss kind, epochs, label)`` of each phase of ``strategy``.

    Raises:
        ModelError: unknown strategy.
    """
    budget = cfg.epochs + cfg.pretrain_epochs
    table = {
        "regionmir": [("pretrain", "contrastive", cfg.pretrain_epochs, "regionmir pretrain"),
                      ("finetune", "supervised", cfg.epochs, "regionmir finetune")],
        "scratch": [("supervised", "supervised", budget, "scratch")],
        "cotrain": [("cotrain", "cotrain", budget, "cotrain")],
    }
    if strategy not in table:
        raise ModelError(f"Unknown strategy {strategy!r}; use {', '.join(STRATEGIES)} or all")
    return table[strategy]


def train_strategy(strategy: str, crops, cfg: TrainConfig, device: torch.device, progress: Progress,
                   checkpoint: Checkpoint | None = None, pretrain=None) -> tuple[RegionEncoder, dict]:
    """Train one strategy; returns the model and its loss history per phase.

    ``pretrain`` (regionmir only) replaces ``crops`` in the contrastive phase, e.g. phantom crops
    plus unlabeled real crops; fine-tuning always uses the labeled ``crops`` (which may hold real
    crops named by their boxes, see ``TrainConfig.real_labels``).

    With ``checkpoint``, the state after every epoch is saved there, and a run stopped part way
    continues from its last saved epoch (same config and data) instead of starting over.
    """
    steps = phases(strategy, cfg)
    model = new_model(cfg, len(crops.classes), device)
    saved = checkpoint.load(device) if checkpoint else None
    if saved:
        model.load_state_dict(saved["model"])
        progress.note(f"{strategy}: resuming after {steps[saved['phase']][3]} epoch {saved['epoch']}")
    history: dict[str, list[float]] = {}
    for i, (key, kind, epochs, label) in enumerate(steps):
        if saved and i < saved["phase"]:
            history[key] = saved["history"][key]
            continue
        resume = saved if saved and i == saved["phase"] else None
        if resume and resume["epoch"] >= epochs:  # the phase had finished
            history[key] = resume["history"][key]
            continue
        phase_resume = None if resume is None else {**resume, "history": resume["history"][key]}

        def on_epoch(epoch, hist, states, i=i, key=key):
            if checkpoint:
                checkpoint.save({"phase": i, "epoch": epoch, "model": model.state_dict(),
                                 "history": {**history, key: hist}, **states})

        data = pretrain if kind == "contrastive" and pretrain is not None else crops
        history[key] = fit(model, data, kind, epochs, cfg, device, progress, label, phase_resume, on_epoch)
    return model, history


@torch.no_grad()
def predict(model: RegionEncoder, crops: np.ndarray, mean: float, std: float,
            device: torch.device, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (N, D), logits (N, C))`` of clean crops ``(N, S, S)`` in [0, 1], eval mode."""
    model.eval()
    embs, logits = [], []
    for start in range(0, len(crops), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size], dtype=np.float32))
        e, lg = model(to_input(x.unsqueeze(1).to(device), mean, std))
        embs.append(e.cpu().numpy())
        logits.append(lg.cpu().numpy())
    return np.concatenate(embs), np.concatenate(logits)
