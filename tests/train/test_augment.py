"""Augmentations: radiograph-suited, in range, and never mirrored."""

import numpy as np
import pytest
import torch

from regionmir.regions import CropSpec, normalize
from regionmir.train.augment import LIGHT, AugmentConfig, augment, blur, geometric, to_input


def _asymmetric(b=128, s=32):
    x = torch.full((b, 1, s, s), 0.2)
    x[:, :, :, : s // 2] = 0.8  # image-left half bright
    x[:, :, : s // 4, :] += 0.1  # top band brighter: also up/down asymmetric
    return x.clamp(0, 1)


@pytest.mark.parametrize("cfg", [AugmentConfig(), LIGHT], ids=["strong", "light"])
def test_never_flips(cfg):
    torch.manual_seed(0)
    s = 32
    for _ in range(10):  # 10 x 128 random draws
        y = augment(_asymmetric(s=s), cfg)
        left = y[..., 4 : s - 4, 2 : s // 2 - 4].mean(dim=(1, 2, 3))
        right = y[..., 4 : s - 4, s // 2 + 4 : s - 2].mean(dim=(1, 2, 3))
        assert (left > right).all(), "a crop came out mirrored left/right"


def test_geometric_keeps_orientation_exactly_at_zero_strength():
    x = torch.rand(4, 1, 16, 16)
    still = AugmentConfig(scale=0, translate=0, rotate_deg=0)
    assert torch.allclose(geometric(x, still), x, atol=1e-5)


def test_output_in_range_and_shape():
    torch.manual_seed(1)
    x = torch.rand(64, 1, 24, 24)
    y = augment(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)


def test_blur_smooths_selected_samples():
    x = torch.zeros(8, 1, 15, 15)
    x[:, :, 7, 7] = 1.0
    y = blur(x, AugmentConfig(p_blur=1.0, blur_sigma=(1.0, 1.0)))
    assert torch.allclose(y.sum(dim=(1, 2, 3)), torch.ones(8), atol=1e-5)
    assert (y[:, :, 7, 7] < 0.5).all()


def test_to_input_is_regions_normalize():
    crops = np.random.default_rng(0).random((3, 20, 20), dtype=np.float32)
    spec = CropSpec(size=20, mean=0.45, std=0.2)
    ours = to_input(torch.from_numpy(crops).unsqueeze(1), spec.mean, spec.std).numpy()
    np.testing.assert_allclose(ours, normalize(crops, spec), atol=1e-6)
