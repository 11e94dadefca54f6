"""Shuffled training batches streamed from a crop set (in memory or the on-disk cache) by DataLoader workers.

An epoch is a permutation of the crops, drawn from ``(seed, phase, epoch)`` alone, so a run
resumed at epoch ``e`` sees exactly the batches it would have seen. Item ``i`` of
:class:`BatchSet` is batch ``i`` of that permutation, read in one go (``rows`` of a
:class:`~regionmir.train.cache.DiskCrops` reads them with ``pread``), so worker processes read
ahead while the model trains and the trainer's memory does not grow with the archive.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class BatchSet(Dataset):
    """Batch ``i`` of the current epoch: ``(views (B, V, S, S), labels (B,))`` as tensors."""

    def __init__(self, crops, batch: int):
        self.crops, self.batch = crops, batch
        self.order = np.arange(len(crops))

    def __len__(self) -> int:
        return max(1, len(self.crops) // self.batch)  # the ragged tail is dropped: BN and NT-Xent like full batches

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch : (i + 1) * self.batch]  # (B,)
        return torch.from_numpy(np.ascontiguousarray(self.crops.rows(idx))), torch.from_numpy(self.crops.labels[idx])


def epoch_order(n: int, seed: int, phase: int, epoch: int) -> np.ndarray:
    """The permutation of ``n`` crops for one epoch (stateless: resumable)."""
    return np.random.default_rng([seed, phase, epoch]).permutation(n)


def loader(batches: BatchSet, workers: int, device: torch.device) -> DataLoader:
    """A DataLoader over whole batches: ``workers`` processes read ahead; pinned memory on CUDA."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)


def two_views(views: torch.Tensor, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two randomly chosen views per crop: ``(B, V, S, S)`` -> two ``(B, 1, S, S)`` float tensors on ``device``."""
    b, v = views.shape[:2]
    pick = torch.randint(0, v, (2, b), generator=gen).to(device)  # (2, B)
    views = views.to(device, non_blocking=True)  # float16 over the bus (pinned on CUDA), then picked there
    rows = torch.arange(b, device=device)
    return views[rows, pick[0]].unsqueeze(1).float(), views[rows, pick[1]].unsqueeze(1).float()
