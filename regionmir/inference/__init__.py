"""Inference (ONNX through onnxruntime, no torch): the region encoder and the box localizer.

- :mod:`~regionmir.inference.runtime`: providers (CUDA when present, else CPU) and sessions
- :mod:`~regionmir.inference.meta`: a model's metadata (anatomies, input size, normalisation, id)
- :mod:`~regionmir.inference.folder`: ``--model`` (a folder, a file in it, or the default) -> model files
- :mod:`~regionmir.inference.encoder`: region crops -> L2-normalised embeddings
- :mod:`~regionmir.inference.localizer`: a film -> one box per anatomy
"""

from regionmir.inference.encoder import Encoder, load_encoder
from regionmir.inference.folder import ModelFolder
from regionmir.inference.localizer import Localizer, load_localizer
from regionmir.inference.meta import ModelMeta

__all__ = ["Encoder", "Localizer", "ModelFolder", "ModelMeta", "load_encoder", "load_localizer"]
