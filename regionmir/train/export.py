"""ONNX export of a trained encoder: input ``image`` (N, 1, S, S), outputs ``embedding`` and ``anatomy_logits``.

Uses torch's TorchScript-based exporter (no onnxscript needed) at opset 17, which
onnxruntime 1.2x-1.3x runs. The batch axis is dynamic. ``metadata_props`` carry the
:class:`~regionmir.inference.meta.ModelMeta`; ``model_id`` hashes the graph (weights included).
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from regionmir.inference.meta import ModelMeta, model_id_of
from regionmir.train.models import RegionEncoder

OPSET = 17


class _Exported(nn.Module):
    """The inference graph: normalized crops -> (embedding, anatomy_logits)."""

    def __init__(self, model: RegionEncoder):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(image)


def to_onnx_proto(model: RegionEncoder, size: int) -> onnx.ModelProto:
    """Trace ``model`` (on CPU, eval mode) into an ONNX model with a dynamic batch axis."""
    was_training = model.training
    net = _Exported(model).to("cpu").to(memory_format=torch.contiguous_format).eval()
    dummy = torch.zeros(2, 1, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            net, (dummy,), buf, input_names=["image"], output_names=["embedding", "anatomy_logits"],
            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}, "anatomy_logits": {0: "batch"}},
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
    model.train(was_training)  # the exporter restores the wrapper's mode onto the model
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    return proto


def export_encoder(model: RegionEncoder, path: str | Path, meta: ModelMeta) -> ModelMeta:
    """Write ``model`` to ``path`` as ONNX with ``meta`` (its ``model_id`` is recomputed).

    Returns:
        The metadata as written, with the content-hash ``model_id``.
    """
    device = next(model.parameters()).device
    proto = to_onnx_proto(model.to("cpu"), meta.input_size)
    model.to(device)
    meta = dataclasses.replace(meta, model_id=model_id_of(proto.graph.SerializeToString()))
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return meta
