"""ONNX encoder via onnxruntime: region crops -> (L2-normalized embedding, anatomy logits).

No torch here. The crop and the intensity normalisation come from :mod:`regionmir.regions`
with the :class:`~regionmir.regions.CropSpec` stored in the model's metadata, so a crop made at
search or ingest time is made exactly as the crops the encoder was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from regionmir.errors import ModelError
from regionmir.inference.folder import ModelFolder
from regionmir.inference.runtime import choose_providers, cuda_device_present, open_model
from regionmir.regions import Box, crop_regions, normalize

log = logging.getLogger("regionmir")

__all__ = ["Encoder", "choose_providers", "cuda_device_present", "load_encoder"]


class Encoder:
    """An exported RegionMIR encoder running in onnxruntime."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0):
        """Load ``path`` (a model folder or an ``.onnx`` file); ``threads`` > 0: CPU threads, no spinning.

        Raises:
            ModelError: missing or unreadable file, metadata missing, or not an encoder.
        """
        self.path = ModelFolder(path).encoder_file
        self._session, self.meta, _ = open_model(self.path, "encoder", device, threads)
        self.providers = list(self._session.get_providers())
        self.model_id = self.meta.model_id
        self.dim = self.meta.embedding_dim
        self.spec = self.meta.crop_spec()
        self.anatomies = self.meta.anatomy_list()
        log.info("encoder %s (%s, D=%d, %d px) on %s", self.model_id, self.meta.backbone, self.dim,
                 self.spec.size, self.providers[0])

    def __repr__(self) -> str:
        return f"Encoder({self.path}, model_id={self.model_id}, dim={self.dim}, providers={self.providers})"

    def embed(self, crops: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Encode crops made with ``crop_regions(image, boxes, self.spec)``.

        Args:
            crops: ``(N, S, S)`` float32 in [0, 1], ``S = self.spec.size``.
            batch_size: crops per onnxruntime call.

        Returns:
            ``(embeddings (N, D) L2-normalized, logits (N, C))`` float32; C follows ``self.anatomies``.

        Raises:
            ModelError: crops of the wrong shape for this model.
        """
        crops = np.asarray(crops, dtype=np.float32)
        s = self.spec.size
        if crops.ndim != 3 or crops.shape[1:] != (s, s):
            raise ModelError(
                f"Encoder {self.model_id} takes crops of shape (N, {s}, {s}); got {crops.shape}. "
                "Make crops with regions.crop_regions(image, boxes, encoder.spec)."
            )
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, len(self.anatomies)), np.float32)
        embs, logits = [], []
        for start in range(0, len(crops), batch_size):
            x = normalize(crops[start : start + batch_size], self.spec)  # (B, 1, S, S)
            e, lg = self._session.run(["embedding", "anatomy_logits"], {"image": x})
            embs.append(e)
            logits.append(lg)
        return np.concatenate(embs), np.concatenate(logits)

    def crops(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """``(N, S, S)`` crops of ``boxes`` from ``image`` ``(H, W)`` [0, 1], per this model's spec."""
        return crop_regions(image, list(boxes), self.spec)

    def embed_regions(self, image: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray]:
        """Crop ``boxes`` from ``image`` and encode them; see :meth:`embed`."""
        return self.embed(self.crops(image, boxes))

    def predict_anatomy(self, logits: np.ndarray) -> list:
        """The most likely :class:`~regionmir.anatomy.Anatomy` for each row of ``logits``."""
        return [self.anatomies[i] for i in np.argmax(logits, axis=1)]


def load_encoder(model: str | Path | None = None, device: str = "auto", threads: int = 0) -> Encoder:
    """The encoder in ``model`` (folder or .onnx), default ``config.default_model_dir()``.

    Raises:
        ModelError: no model there (the message says to run `regionmir train`).
    """
    return ModelFolder(model).load_encoder(device=device, threads=threads)
