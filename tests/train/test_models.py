"""Encoder networks: one-channel input, normalized embeddings, helpful errors."""

import pytest
import torch

from regionmir.errors import ModelError
from regionmir.train.models import RegionEncoder, make_backbone


@pytest.mark.parametrize("name,size", [("resnet6-w8", 32), ("resnet10-w16", 48), ("resnet18", 64)])
def test_shapes_and_unit_embeddings(name, size):
    torch.manual_seed(0)
    model = RegionEncoder(name, embedding_dim=24, classes=5).eval()
    emb, logits = model(torch.randn(3, 1, size, size))
    assert emb.shape == (3, 24) and logits.shape == (3, 5)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model.projection(torch.randn(2, 1, size, size)).shape == (2, 64)


def test_torchvision_stem_takes_one_channel():
    net, dim = make_backbone("resnet34")
    assert net.conv1.in_channels == 1 and dim == 512


def test_unknown_backbone_and_bad_dim():
    with pytest.raises(ModelError, match="Unknown backbone 'vgg'.*resnet10-w16"):
        RegionEncoder("vgg")
    with pytest.raises(ModelError, match="1..512"):
        RegionEncoder("resnet6-w8", embedding_dim=1024)
