"""Localizer network: each of its 29 outputs belongs to one anatomy, from the prior to the exported file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regionmir.anatomy import BOXED
from regionmir.annotations import Region, SceneGraph
from regionmir.inference.localizer import Localizer
from regionmir.regions import Box
from regionmir.train.localizer.data import make_film, template
from regionmir.train.localizer.model import N_REGIONS, LocalizerNet
from regionmir.train.localizer.run import LocalizerConfig, write_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layout(side: int, cell: float) -> np.ndarray:
    """``(29, 4)`` normalized boxes, one per region, each ``cell`` wide at the centre of its own
    cell of a 6 x 5 grid: no two regions share a place, so a swapped pair shows."""
    i = np.arange(N_REGIONS)
    cx, cy = (i % 6 + 0.5) / 6, (i // 6 + 0.5) / 5
    return np.stack([cx - cell / 2, cy - cell / 2, cx + cell / 2, cy + cell / 2], 1).astype(np.float32)


def test_an_untrained_localizer_puts_each_anatomys_mean_box_under_its_name(tmp_path):
    """Before any training the boxes are the prior (the mean box of each anatomy): the exported
    localizer must return anatomy A at A's mean box, for all 29, not another region's box."""
    side = 128
    boxes = _layout(side, 0.1) * side  # (29, 4) pixels, distinct per anatomy
    sg = SceneGraph("im", "s1", "p1", "PA", side, side,
                    tuple(Region(a, Box(*map(float, b))) for a, b in zip(BOXED, boxes)))
    cfg = LocalizerConfig(size=64, width=4, device="cpu")
    film = make_film("im", np.full((side, side), 0.5, np.float32), sg, cfg.size)
    torch.manual_seed(0)
    model = LocalizerNet(cfg.size, torch.from_numpy(template([film], cfg.size)), cfg.width, hidden=16).eval()
    write_model(model, cfg, "fp", tmp_path / "localizer.onnx")
    regions = Localizer(tmp_path, device="cpu").locate(np.random.default_rng(0).uniform(0, 1, (side, side)))
    assert [r.anatomy for r in regions] == list(BOXED)
    for r, want in zip(regions, boxes):
        np.testing.assert_allclose([r.box.x1, r.box.y1, r.box.x2, r.box.y2], want, atol=0.05, err_msg=r.anatomy.slug)


def test_second_stage_corrects_each_region_from_the_pixels_at_its_own_box():
    """Refinement reads stride-8 features over each region's box. Brightening the image at the
    centre of one region's box must move that region's box and confidence, and no other region's:
    the features behind a region are those at its own box, not at another region's."""
    size = 512
    torch.manual_seed(0)
    model = LocalizerNet(size, torch.from_numpy(_layout(size, 0.04)), width=4, hidden=16).eval()
    with torch.no_grad():  # a trained-looking second stage (it starts at zero), a first stage that sees nothing
        torch.nn.init.normal_(model.refine_head[-1].weight, std=0.5)
        model.iou_head.weight.zero_()
    base = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (1, 1, size, size)).astype(np.float32))
    x = base.repeat(N_REGIONS + 1, 1, 1, 1)  # (30, 1, S, S): the image, then one bump per region
    centres = (_layout(size, 0.04).reshape(-1, 2, 2).mean(1) * size).astype(int)  # (29, 2) x, y
    for r, (cx, cy) in enumerate(centres):
        x[r + 1, 0, cy - 4:cy + 4, cx - 4:cx + 4] += 5.0
    with torch.no_grad():
        coarse, boxes, logits = model.stages(x)
        conf = model.confidence(logits)  # (30, 29)
    assert torch.equal(coarse[0], coarse[1])  # the first stage is the same for every image here
    moved = (boxes[1:] - boxes[:1]).abs().sum(-1) > 1e-5  # (29 bumps, 29 regions)
    rated = (conf[1:] - conf[:1]).abs() > 1e-6
    assert torch.equal(moved, torch.eye(N_REGIONS, dtype=torch.bool)), moved.nonzero().tolist()
    assert torch.equal(rated, torch.eye(N_REGIONS, dtype=torch.bool)), rated.nonzero().tolist()
