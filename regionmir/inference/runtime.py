"""onnxruntime sessions for RegionMIR model files: provider choice, quiet logging, loading."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache
from pathlib import Path

from regionmir.errors import MissingDependencyError, ModelError
from regionmir.inference.meta import ModelMeta

QUIET = 3  # onnxruntime log severity: 3 = errors only (no provider-fallback warnings)


@lru_cache(maxsize=1)
def cuda_device_present() -> bool:
    """True when the CUDA driver loads and reports at least one device."""
    if not (os.path.exists("/dev/nvidia0") or os.path.exists("/dev/dxg")):
        return False
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except (OSError, AttributeError):
        return False


def ort():
    """The onnxruntime module, with its default logger set to errors only."""
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - onnxruntime is a core dependency
        raise MissingDependencyError("onnxruntime", "", "Running RegionMIR models") from None
    onnxruntime.set_default_logger_severity(QUIET)
    return onnxruntime


def choose_providers(device: str = "auto") -> list[str]:
    """onnxruntime providers for ``device`` ("auto", "cpu" or "cuda").

    CUDA is chosen only when onnxruntime offers it AND a CUDA device really exists, so a
    CPU machine with onnxruntime-gpu installed neither fails nor prints warnings.

    Raises:
        ModelError: ``device="cuda"`` where no usable GPU is found, or an unknown device.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ModelError(f"Unknown device {device!r}; use auto, cpu or cuda")
    cuda_ok = "CUDAExecutionProvider" in ort().get_available_providers() and cuda_device_present()
    if device == "cuda" and not cuda_ok:
        raise ModelError(
            "device=cuda was asked for, but onnxruntime has no usable CUDA GPU here "
            "(needs onnxruntime-gpu and an NVIDIA driver). Use --device cpu or auto."
        )
    if device != "cpu" and cuda_ok:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_model(file: Path, kind: str, device: str = "auto", threads: int = 0):
    """An inference session on ``file`` and its metadata, checked to be a ``kind`` model.

    ``threads`` > 0 runs the CPU provider on that many threads without spin-waiting (a worker
    process that shares the cores with others); 0 keeps onnxruntime's defaults.

    Returns:
        ``(session, meta, props)``: the onnxruntime session, its :class:`ModelMeta` and the raw
        ``metadata_props`` dict.

    Raises:
        ModelError: unreadable file, missing metadata, or a model of another kind.
    """
    rt = ort()
    options = rt.SessionOptions()
    options.log_severity_level = QUIET
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = rt.InferenceSession(str(file), options, providers=choose_providers(device))
    except ModelError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelError(f"Cannot load {kind} {file}: {e}") from None
    props = dict(session.get_modelmeta().custom_metadata_map)
    meta = ModelMeta.from_props(props, source=str(file))
    if meta.kind != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ModelError(f"{file} is a {meta.kind} model, not {article} {kind}")
    return session, meta, props
