"""Encoder networks: a ResNet backbone with a 1-channel stem, embedding, projection and classifier heads.

All weights start random (nothing is downloaded). ``resnet18/34/50/101`` are torchvision's
models with the stem changed to one input channel. The small ``resnet<depth>-w<width>``
variants (e.g. ``resnet10-w16``) are built from torchvision's ``BasicBlock`` with narrower
stages and a 3x3 stride-2 stem without max-pool, sized for 32-96 px crops on a CPU.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from regionmir.errors import ModelError

TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101")
_SMALL = re.compile(r"^resnet(?P<depth>6|10|18)-w(?P<width>\d+)$")
_SMALL_BLOCKS = {6: [1, 1], 10: [1, 1, 1, 1], 18: [2, 2, 2, 2]}
BACKBONE_HELP = "resnet18|resnet34|resnet50|resnet101, or small: resnet6-wW|resnet10-wW|resnet18-wW (e.g. resnet10-w16)"


class SmallResNet(nn.Module):
    """A narrow ResNet of torchvision BasicBlocks; widths double at each stage."""

    def __init__(self, blocks: list[int], width: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout, stride = width * 2**i, 1 if i == 0 else 2
            stages.append(self._stage(cin, cout, n, stride))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.out_dim = cin

    @staticmethod
    def _stage(cin: int, cout: int, n: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        layers = [BasicBlock(cin, cout, stride, down)]
        layers += [BasicBlock(cout, cout) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, C, h, w)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, C)


def check_backbone(name: str) -> None:
    """Raise :class:`ModelError` (listing the choices) unless ``name`` is a known backbone."""
    if not (_SMALL.match(name) or name in TORCHVISION):
        raise ModelError(f"Unknown backbone {name!r}; use {BACKBONE_HELP}")


def make_backbone(name: str) -> tuple[nn.Module, int]:
    """``(module mapping (B, 1, S, S) -> (B, F), F)`` for a backbone name.

    Raises:
        ModelError: unknown name (the message lists the choices).
    """
    check_backbone(name)
    small = _SMALL.match(name)
    if small:
        net = SmallResNet(_SMALL_BLOCKS[int(small["depth"])], int(small["width"]))
        return net, net.out_dim
    net = getattr(tvm, name)(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, out_dim


class CosineClassifier(nn.Module):
    """Logits = scale * cos(embedding, class weight): classes live on the embedding sphere."""

    def __init__(self, dim: int, classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale = scale

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * emb @ F.normalize(self.weight, dim=1).T  # (B, D) @ (D, C) -> (B, C)


class RegionEncoder(nn.Module):
    """Backbone -> embedding (L2-normalized, D) -> cosine classifier; projection head for contrastive loss.

    The projection head sits on the embedding so contrastive pretraining shapes the embedding
    layer too; it is not exported.
    """

    def __init__(self, backbone: str = "resnet10-w16", embedding_dim: int = 128,
                 classes: int = 36, proj_dim: int = 64):
        super().__init__()
        if not 1 <= embedding_dim <= 512:
            raise ModelError(f"embedding_dim must be 1..512, got {embedding_dim}")
        self.backbone, feat = make_backbone(backbone)
        self.embed = nn.Linear(feat, embedding_dim)
        self.project = nn.Sequential(
            nn.Linear(embedding_dim, embedding_dim), nn.ReLU(inplace=True),
            nn.Linear(embedding_dim, proj_dim),
        )
        self.classify = CosineClassifier(embedding_dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalized embedding ``(B, D)`` of normalized crops ``(B, 1, S, S)``."""
        return self.embed(self.backbone(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embedding (B, D) L2-normalized, logits (B, C))`` - the exported outputs."""
        emb = F.normalize(self.features(x), dim=1)
        return emb, self.classify(emb)

    def projection(self, x: torch.Tensor) -> torch.Tensor:
        """Contrastive head output ``(B, P)`` (not normalized; the loss normalizes)."""
        return self.project(self.features(x))
