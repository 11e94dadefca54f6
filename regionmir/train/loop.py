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
    """CPUs this process may use minus those busy with other work (1-minute load), at least 1.

    On a shared machine two OpenMP threads fighting other processes for two cores train 2-3x
    slower than one thread (each barrier waits for a descheduled thread), so a busy machine
    gets fewer threads; an idle one gets all its cores.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = int(os.getloadavg()[0] + 0.5) if hasattr(os, "getloadavg") else 0
    return max(1, min(cpus, cpus - busy))


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads for torch (0: :func:`auto_threads`); returns the number set."""
    torch.set_num_threads(max(1, threads or auto_threads()))
    return torch.get_num_threads()


class _Batches:
    """Random minibatches of two views per crop, augmented on the device."""

    def __init__(self, crops: CropSet, cfg: TrainConfig, device: torch.device, gen: torch.Generator):
        self.views = torch.from_numpy(crops.views)  # (N, V, S, S) float16
        self.labels = torch.from_numpy(crops.labels)  # (N,)
        self.cfg, self.device, self.gen = cfg, device, gen
        n = len(crops)
        self.batch = min(cfg.batch_size, n)
        self.steps = max(1, n // self.batch)  # drop the ragged tail: BN and NT-Xent like full batches

    def __iter__(self):
        n, v = self.views.shape[:2]
        order = torch.randperm(n, generator=self.gen)
        for i in range(self.steps):
            idx = order[i * self.batch : (i + 1) * self.batch]  # (B,)
            pick = torch.randint(0, v, (2, len(idx)), generator=self.gen)  # (2, B) view per sample
            x1 = self.views[idx, pick[0]].float().unsqueeze(1).to(self.device)  # (B, 1, S, S)
            x2 = self.views[idx, pick[1]].float().unsqueeze(1).to(self.device)
            yield x1, x2, self.labels[idx].to(self.device)


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
        return _contrastive(model.projection(x), y, cfg)

    def supervised(model, x1, x2, y):
        _, logits = model(_inputs(x1, LIGHT, mean, std, dom))  # (B, C)
        return F.cross_entropy(logits, y)

    def cotrain(model, x1, x2, y):
        x = _inputs(torch.cat([x1, x2]), AugmentConfig(), mean, std, dom)  # (2B, 1, S, S)
        feats = model.features(x)  # (2B, D)
        z = model.project(feats)  # (2B, P)
        logits = model.classify(F.normalize(feats, dim=1))  # (2B, C)
        return _contrastive(z, y, cfg) + F.cross_entropy(logits, torch.cat([y, y]))

    return {"contrastive": contrastive, "supervised": supervised, "cotrain": cotrain}[kind]


def fit(model: RegionEncoder, crops: CropSet, kind: str, epochs: int, cfg: TrainConfig,
        device: torch.device, progress: Progress, label: str) -> list[float]:
    """Train ``model`` in place for ``epochs`` with the loss of ``kind``; returns mean loss per epoch."""
    if epochs <= 0:
        return []
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + _PHASE_SEED[kind])
    batches = _Batches(crops, cfg, device, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = batches.steps * epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    spec = cfg.crop_spec()
    compute = loss_fn(kind, cfg, spec.mean, spec.std)
    progress.phase(label, total, epochs)
    history, seen, start = [], 0, time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        losses = []
        for x1, x2, y in batches:
            loss = compute(model, x1, x2, y)
            value = loss.item()
            if not math.isfinite(value):
                raise ModelError(f"{label}: loss became {value}; lower --lr or raise --batch-size")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(value)
            seen += len(y) * (1 if kind == "supervised" else 2)
            progress.step(epoch, float(np.mean(losses)), seen / (time.perf_counter() - start))
        history.append(float(np.mean(losses)))
    return history


def new_model(cfg: TrainConfig, classes: int, device: torch.device) -> RegionEncoder:
    """A freshly initialised encoder (seeded: every strategy starts from the same weights)."""
    torch.manual_seed(cfg.seed)
    model = RegionEncoder(cfg.backbone, cfg.embedding_dim, classes)
    return model.to(device).to(memory_format=torch.channels_last)


def train_strategy(strategy: str, crops: CropSet, cfg: TrainConfig, device: torch.device,
                   progress: Progress, pretrain: CropSet | None = None) -> tuple[RegionEncoder, dict]:
    """Train one strategy; returns the model and its loss history per phase.

    ``pretrain`` (regionmir only) replaces ``crops`` in the contrastive phase, e.g. phantom crops
    plus unlabeled real crops; fine-tuning always uses the labeled ``crops``.
    """
    model = new_model(cfg, len(crops.classes), device)
    budget = cfg.epochs + cfg.pretrain_epochs
    if strategy == "regionmir":
        pre = fit(model, pretrain or crops, "contrastive", cfg.pretrain_epochs, cfg, device, progress,
                  "regionmir pretrain")
        fine = fit(model, crops, "supervised", cfg.epochs, cfg, device, progress, "regionmir finetune")
        return model, {"pretrain": pre, "finetune": fine}
    if strategy == "scratch":
        return model, {"supervised": fit(model, crops, "supervised", budget, cfg, device, progress, "scratch")}
    if strategy == "cotrain":
        return model, {"cotrain": fit(model, crops, "cotrain", budget, cfg, device, progress, "cotrain")}
    raise ModelError(f"Unknown strategy {strategy!r}; use {', '.join(STRATEGIES)} or all")


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
