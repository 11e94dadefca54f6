"""Contrastive losses: NT-Xent (SimCLR, self-supervised) and supervised contrastive (SupCon).

RegionMIR pretrains with NT-Xent: the two views of one region crop are the positive pair and
every other crop in the batch is a negative. SupCon would make all crops of the same anatomy
positives, which uses the anatomy labels during "pretraining" and so would leak the
fine-tuning target into the pretraining comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent loss of SimCLR, averaged over all 2B anchors.

    Args:
        z1: ``(B, P)`` projections of the first view.
        z2: ``(B, P)`` projections of the second view; row i of z1 and z2 is a positive pair.
        temperature: softmax temperature.

    Returns:
        Scalar loss.
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, P)
    sim = z @ z.T / temperature  # (2B, 2B)
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))  # an anchor is never its own candidate
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)  # (2B,)
    return F.cross_entropy(sim, target)


def supcon(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out), averaged over anchors with positives.

    Args:
        z: ``(N, P)`` projections (all views stacked).
        labels: ``(N,)`` integer class of each row; rows with the same label are positives.
        temperature: softmax temperature.

    Returns:
        Scalar loss (0 when no anchor has a positive).
    """
    n = z.shape[0]
    z = F.normalize(z, dim=1)  # (N, P)
    sim = z @ z.T / temperature  # (N, N)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    log_prob = sim.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)  # (N, N)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask  # (N, N)
    n_pos = pos.sum(dim=1)  # (N,)
    has = n_pos > 0
    if not has.any():
        return z.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has] / n_pos[has]  # (M,)
    return -mean_log_prob.mean()
