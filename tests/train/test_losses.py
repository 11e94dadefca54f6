"""Contrastive losses against slow, obvious loop implementations."""

import math

import pytest
import torch

from regionmir.train.losses import nt_xent, supcon


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def nt_xent_reference(z1, z2, t):
    z = torch.cat([z1, z2])
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        j = (i + b) % n  # the other view of the same crop
        denom = sum(math.exp(_cos(z[i], z[k]) / t) for k in range(n) if k != i)
        total += -math.log(math.exp(_cos(z[i], z[j]) / t) / denom)
    return total / n


def supcon_reference(z, labels, t):
    n = len(z)
    losses = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(_cos(z[i], z[k]) / t) for k in range(n) if k != i)
        losses.append(-sum(math.log(math.exp(_cos(z[i], z[p]) / t) / denom) for p in positives) / len(positives))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("b,dim,t", [(1, 3, 0.5), (4, 8, 0.2), (7, 5, 1.0)])
def test_nt_xent_matches_loop(b, dim, t):
    g = torch.Generator().manual_seed(b)
    z1, z2 = torch.randn(b, dim, generator=g, dtype=torch.float64), torch.randn(b, dim, generator=g, dtype=torch.float64)
    assert nt_xent(z1, z2, t).item() == pytest.approx(nt_xent_reference(z1, z2, t), rel=1e-9)


def test_nt_xent_rewards_matching_views():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, generator=g)
    aligned = nt_xent(z, z + 0.01 * torch.randn(16, 32, generator=g))
    shuffled = nt_xent(z, z[torch.randperm(16, generator=g)])
    assert aligned < shuffled


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1, 0], [3, 3, 3, 3], [0, 1, 2, 0]])
def test_supcon_matches_loop(labels):
    g = torch.Generator().manual_seed(len(labels))
    z = torch.randn(len(labels), 6, generator=g, dtype=torch.float64)
    y = torch.tensor(labels)
    assert supcon(z, y, 0.3).item() == pytest.approx(supcon_reference(z, labels, 0.3), rel=1e-9)


def test_supcon_without_positives_is_zero_and_differentiable():
    z = torch.randn(3, 4, requires_grad=True)
    loss = supcon(z, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and z.grad is not None
