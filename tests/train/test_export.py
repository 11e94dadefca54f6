"""ONNX export: onnxruntime agrees with torch, the batch is dynamic, metadata and model id are set."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from regionmir.inference.meta import ModelMeta, model_id_of
from regionmir.train.export import export_encoder
from regionmir.train.models import RegionEncoder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = RegionEncoder("resnet6-w8", embedding_dim=16, classes=4)
    # a few training-mode passes so BatchNorm running stats are not the identity
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 32, 32) * 2 + 0.5)
    model.eval()
    meta = ModelMeta(
        model_id="", kind="encoder", input_size=32, channels=1, crop_context=0.1, norm_mean=0.5,
        norm_std=0.25, anatomies=("left-lung", "right-lung", "spine", "trachea"), embedding_dim=16,
        backbone="resnet6-w8", strategy="scratch", archive_fingerprint="abc",
    )
    path = tmp_path_factory.mktemp("onnx") / "encoder.onnx"
    return model, export_encoder(model, path, meta), path


@pytest.mark.parametrize("batch", [1, 5, 70])
def test_onnxruntime_matches_torch(exported, batch):
    model, _, path = exported
    x = np.random.default_rng(batch).normal(size=(batch, 1, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    emb, logits = session.run(["embedding", "anatomy_logits"], {"image": x})
    with torch.no_grad():
        t_emb, t_logits = model(torch.from_numpy(x))
    np.testing.assert_allclose(emb, t_emb.numpy(), atol=1e-4)
    np.testing.assert_allclose(logits, t_logits.numpy(), atol=1e-4)
    assert emb.shape == (batch, 16) and logits.shape == (batch, 4)


def test_metadata_and_content_hash(exported):
    _, meta, path = exported
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert ModelMeta.from_props(props) == meta
    assert meta.model_id == model_id_of(proto.graph.SerializeToString())
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["embedding", "anatomy_logits"]
