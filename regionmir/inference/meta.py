"""What a model file says about itself: ModelMeta, stored as ONNX ``metadata_props`` (no torch).

Every value in ``metadata_props`` is a string; lists and floats that must survive exactly are
JSON. ``model_id`` is a content hash of the ONNX graph (weights included, metadata excluded),
so two exports of the same weights get the same id and a collection can tell which model
filled it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from regionmir.anatomy import Anatomy
from regionmir.errors import ModelError
from regionmir.regions import CropSpec

KINDS = ("encoder", "localizer")
_JSON_FIELDS = ("anatomies", "norm_mean", "norm_std", "crop_context")
_INT_FIELDS = ("input_size", "channels", "embedding_dim")


def model_id_of(graph_bytes: bytes) -> str:
    """The content hash used as ``model_id``: sha256 of the serialized ONNX graph, 16 hex."""
    return hashlib.sha256(graph_bytes).hexdigest()[:16]


def utc_now() -> str:
    """ISO-8601 UTC timestamp to the second, as written in ``created``."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class ModelMeta:
    """Self-description of an exported model (see docs/ARCHITECTURE.md, inference/)."""

    model_id: str  # sha256 of the ONNX graph bytes, first 16 hex
    kind: str  # "encoder" or "localizer"
    input_size: int  # crop side S of the (N, 1, S, S) input
    channels: int  # 1: grey radiographs
    crop_context: float  # CropSpec.context the model was trained with
    norm_mean: float  # CropSpec.mean
    norm_std: float  # CropSpec.std
    anatomies: tuple[str, ...]  # slugs, in logit order
    embedding_dim: int  # D of the L2-normalized `embedding` output (0 for a localizer)
    backbone: str  # e.g. "resnet18", "resnet10-w16"
    strategy: str  # "regionmir", "scratch", "cotrain" (how the encoder was trained)
    archive_fingerprint: str  # hash of the training split (ids + scene graphs)
    created: str = field(default_factory=utc_now)  # ISO-8601 UTC

    def crop_spec(self) -> CropSpec:
        """The CropSpec every crop fed to this model must be made with."""
        return CropSpec(
            size=self.input_size, context=self.crop_context, mean=self.norm_mean, std=self.norm_std
        )

    def anatomy_list(self) -> list[Anatomy]:
        """``anatomies`` as :class:`Anatomy` members, in logit order."""
        return [Anatomy.parse(s) for s in self.anatomies]

    def to_props(self) -> dict[str, str]:
        """All fields as strings, ready for ONNX ``metadata_props``."""
        out = {}
        for key, value in asdict(self).items():
            if key in _JSON_FIELDS:
                out[key] = json.dumps(list(value) if isinstance(value, tuple) else value)
            else:
                out[key] = str(value)
        return out

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMeta:
        """Parse ``metadata_props`` written by :meth:`to_props`.

        Raises:
            ModelError: a field is missing or malformed (the model was not exported by
                ``regionmir train``, or by an incompatible version).
        """
        names = [f for f in cls.__dataclass_fields__]
        missing = [n for n in names if n not in props]
        if missing:
            raise ModelError(
                f"{source} lacks RegionMIR metadata ({', '.join(missing)}). "
                "Export models with `regionmir train ARCHIVE --out MODEL_DIR`."
            )
        try:
            values = {}
            for name in names:
                raw = props[name]
                if name in _JSON_FIELDS:
                    value = json.loads(raw)
                    values[name] = tuple(value) if isinstance(value, list) else float(value)
                elif name in _INT_FIELDS:
                    values[name] = int(raw)
                else:
                    values[name] = raw
        except (ValueError, TypeError) as e:
            raise ModelError(f"{source} has malformed metadata: {e}") from None
        meta = cls(**values)
        if meta.kind not in KINDS:
            raise ModelError(f"{source} has kind {meta.kind!r}; expected one of {KINDS}")
        return meta
