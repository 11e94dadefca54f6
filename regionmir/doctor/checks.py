"""Environment health checks behind `regionmir doctor`: each returns a Check (OK/WARN/FAIL + a fix).

Every check is fast (well under a second on a laptop) and quiet: no CUDA error spam on CPU
machines, no network except the Qdrant URL it is given. The Qdrant server probe lives in
:mod:`regionmir.store.probe` (the ingest worker waits on it too).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# Distributions whose versions the report lists (import names differ; metadata lookup needs none).
PACKAGES = (
    "regionmir", "numpy", "pydicom", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg",
    "pylibjpeg-rle", "pillow", "onnxruntime", "onnxruntime-gpu", "qdrant-client",
    "qdrant-edge-py", "typer", "rich",
)
REQUIRED = ("numpy", "pydicom", "qdrant-client", "qdrant-edge-py", "typer", "rich")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str  # short topic: "python", "codecs", "model", "store", ...
    status: str  # OK, WARN or FAIL
    detail: str  # what was found
    fix: str = ""  # what to do about it (empty when nothing to do)

    def as_dict(self) -> dict:
        return asdict(self)


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    """Python and package versions; FAIL when a required package is missing."""
    py = ".".join(map(str, sys.version_info[:3]))
    found = {d: _version(d) for d in PACKAGES}
    listed = ", ".join(f"{d} {v}" for d, v in found.items() if v)
    missing = [d for d in REQUIRED if not found[d]]
    if not (found["onnxruntime"] or found["onnxruntime-gpu"]):
        missing.append("onnxruntime")
    if sys.version_info < (3, 10):
        return Check("python", FAIL, f"Python {py}; RegionMIR needs 3.10 or newer", "Use Python >= 3.10.")
    if missing:
        return Check("python", FAIL, f"Python {py}; missing: {', '.join(missing)}",
                     "Reinstall the package: pip install regionmir")
    return Check("python", OK, f"Python {py}; {listed}")


def check_torch() -> Check:
    """torch is optional (train extra); it must not have been imported by the search path."""
    from importlib.util import find_spec

    if "torch" in sys.modules:
        return Check("torch", WARN, "torch was imported although no training ran",
                     "Only regionmir/train may import torch: report this as a bug.")
    if find_spec("torch") is None:
        return Check("torch", OK, "not installed: fine for search and ingest "
                     "(only `regionmir train` needs it: pip install 'regionmir[train]')")
    return Check("torch", OK, f"torch {_version('torch')} installed (train extra); not loaded by search")


def check_home() -> Check:
    """``$REGIONMIR_HOME`` exists and is writable, or can be created."""
    from regionmir import config

    home = config.home()
    target = home
    while not target.exists() and target != target.parent:
        target = target.parent  # the nearest existing ancestor decides whether home can be made
    if not target.is_dir():
        return Check("home", FAIL, f"{home}: {target} is not a folder", "Set REGIONMIR_HOME to a folder.")
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as e:
        return Check("home", FAIL, f"{home} is not writable ({e.strerror})",
                     "Set REGIONMIR_HOME to a writable folder, or fix its permissions.")
    if target != home:
        return Check("home", OK, f"{home} does not exist yet; it will be created on first use")
    return Check("home", OK, f"{home} is writable")


def check_salt() -> Check:
    """The pseudonym salt: present (env or file), never printed."""
    from regionmir import config

    if os.environ.get("REGIONMIR_SALT"):
        return Check("salt", OK, "REGIONMIR_SALT is set (patient pseudonyms use it)")
    from regionmir.errors import RegionMIRError
    from regionmir.privacy import read_salt

    path = config.home() / "salt"
    if path.exists() or path.is_symlink():
        try:
            read_salt(path)  # the check ingest and search make
        except (RegionMIRError, OSError) as e:
            detail = str(e) if isinstance(e, RegionMIRError) else f"{path}: {e.strerror or e}"
            return Check("salt", FAIL, detail, "Restore it from a backup (pseudonyms depend on it), or "
                         "delete it to start a new archive.")
        return Check("salt", OK, f"{path} exists; back it up with the store")
    return Check("salt", WARN, f"no salt yet ({path} is created by the first ingest)",
                 "Fine for a new install. Searching by patient needs the salt the archive was "
                 "ingested with: copy it, or set REGIONMIR_SALT.")


def check_codecs() -> Check:
    """DICOM codecs: JPEG 2000 and RLE encode+decode round trips, JPEG decode, JPEG-LS availability."""
    try:
        from regionmir.doctor import codecs as codectest

        codectest.round_trip_lossless()
        codectest.decode_jpeg()
    except ImportError as e:
        return Check("codecs", FAIL, f"a codec is not installed ({e.name or e})",
                     "pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg pylibjpeg-rle")
    except Exception as e:  # a codec that imports but cannot decode is as bad as none
        return Check("codecs", FAIL, f"DICOM codec round trip failed: {e}",
                     "Reinstall the codecs: pip install --force-reinstall pylibjpeg "
                     "pylibjpeg-openjpeg pylibjpeg-libjpeg pylibjpeg-rle")
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGLosslessSV1, JPEGLSLossless

    missing = [u.name for u in (JPEGLosslessSV1, JPEGLSLossless) if not get_decoder(u).is_available]
    if missing:
        return Check("codecs", WARN, f"no decoder for: {'; '.join(missing)}",
                     "pip install pylibjpeg-libjpeg (needed only if the archive uses these)")
    return Check("codecs", OK, "JPEG 2000 and RLE round trips, JPEG baseline decode; "
                 "JPEG lossless and JPEG-LS decoders available")


def check_model_folder(model: str | Path | None = None) -> tuple[Check, Path | None]:
    """The encoder: file present, loads in onnxruntime (CPU), metadata complete, one forward pass.

    Returns the check and the encoder file (None when it cannot be used), for :func:`check_gpu`.
    """
    from regionmir import config
    from regionmir.errors import ModelError
    from regionmir.inference.folder import ModelFolder

    folder = ModelFolder(model or None)
    try:
        import numpy as np

        enc = folder.load_encoder(device="cpu")
    except ModelError as e:
        fix = (f"Train one: `regionmir train ARCHIVE --out {config.default_model_dir()}` "
               "(`regionmir demo` makes one from the phantom archive), or pass --model MODEL_DIR.")
        return Check("model", FAIL, str(e), fix), None
    s = enc.spec.size
    try:
        emb, logits = enc.embed(np.zeros((1, s, s), dtype=np.float32))
    except Exception as e:  # onnxruntime's own errors: the graph does not fit its metadata
        return Check("model", FAIL, f"{enc.path}: a forward pass on one {s}px crop failed: "
                     f"{str(e).splitlines()[0]}", "Re-export the model with `regionmir train`."), None
    if emb.shape != (1, enc.dim) or logits.shape != (1, len(enc.anatomies)):
        return Check("model", FAIL, f"{enc.path}: outputs {emb.shape}/{logits.shape} disagree with its "
                     f"metadata ({enc.dim}-d, {len(enc.anatomies)} anatomies)",
                     "Re-export the model with `regionmir train`."), None
    meta = enc.meta
    detail = (f"{enc.path}: model_id {meta.model_id}, {meta.backbone} ({meta.strategy}), "
              f"{meta.embedding_dim}-d, {len(meta.anatomies)} anatomies, {s}px crops")
    if folder.localizer_file is None:
        detail += "; no localizer.onnx (only images with annotated boxes can be ingested)"
        return Check("model", OK, detail), enc.path
    try:
        folder.load_localizer(device="cpu")
    except ModelError as e:
        return Check("model", WARN, f"{detail}; localizer unusable: {e}",
                     "Re-export it with `regionmir train-localizer`, or remove it to use annotated "
                     "boxes only."), enc.path
    return Check("model", OK, f"{detail}; localizer.onnx loads"), enc.path


def check_gpu(model_file: Path | None = None) -> Check:
    """onnxruntime providers, and whether a CUDA GPU is really usable (quietly, no CUDA spam)."""
    from regionmir.inference import runtime

    ort = runtime.ort()
    providers = ort.get_available_providers()
    listed = ", ".join(p.removesuffix("ExecutionProvider") for p in providers)
    has_ep = "CUDAExecutionProvider" in providers
    node = os.path.exists("/dev/nvidia0") or os.path.exists("/dev/dxg")
    if not node:
        note = " (onnxruntime-gpu is installed; it runs on CPU here)" if has_ep else ""
        return Check("gpu", OK, f"no NVIDIA GPU: encoding runs on CPU{note}; providers: {listed}")
    if not runtime.cuda_device_present():
        return Check("gpu", WARN, "an NVIDIA device node exists but the CUDA driver does not "
                     f"initialise; encoding runs on CPU; providers: {listed}",
                     "Check the driver with `nvidia-smi`; in Docker run with --gpus all.")
    if not has_ep:
        return Check("gpu", WARN, f"a CUDA GPU is present but onnxruntime has no CUDA provider ({listed})",
                     "pip uninstall onnxruntime && pip install onnxruntime-gpu")
    if model_file is not None and not _cuda_session_works(ort, model_file):
        return Check("gpu", WARN, "a CUDA GPU is present but onnxruntime could not start the CUDA "
                     "provider (CUDA runtime or cuDNN libraries missing?); encoding runs on CPU",
                     "pip install 'onnxruntime-gpu[cuda,cudnn]' or use an image with CUDA 12 + cuDNN 9.")
    return Check("gpu", OK, f"CUDA GPU usable; providers: {listed}")


def _cuda_session_works(ort, model_file: Path) -> bool:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failed CUDA provider falls back silently
    ort.set_default_logger_severity(4)  # and so does the provider library loader
    try:
        session = ort.InferenceSession(str(model_file), options,
                                       providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        return "CUDAExecutionProvider" in session.get_providers()
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(3)  # regionmir.inference.encoder's level


def check_store(url: str | None = None, api_key: str | None = None, timeout: float = 1.0) -> Check:
    """The server (reachable, ready, key accepted, collections) or the embedded folder."""
    if url:
        return _check_server(url, api_key, timeout)
    from regionmir import config

    return _check_embedded(config.default_store_dir())


def _check_server(url: str, api_key: str | None, timeout: float) -> Check:
    from regionmir.store.probe import probe

    p = probe(url, api_key, timeout)
    if not p.reachable:
        return Check("store", FAIL, p.error or "", "Start Qdrant (`docker compose up -d qdrant`) or fix "
                     "--qdrant-url / QDRANT_URL; check firewalls and TLS (https://).")
    if p.auth_ok is False:
        return Check("store", FAIL, p.error or "", "Set QDRANT_API_KEY to the server's "
                     "QDRANT__SERVICE__API_KEY.")
    if p.auth_ok is None:
        return Check("store", FAIL, p.error or "", "Point --qdrant-url at the REST port (6333).")
    cluster = f", cluster of {p.peers} peers" if p.peers else ""
    names = ", ".join(p.collections or ()) or "none yet"
    detail = f"Qdrant {p.version or '?'} at {p.url}{cluster}; collections: {names}"
    if not p.ready:
        return Check("store", WARN, f"{detail}; {p.error}", "Wait for the server to finish starting.")
    skew = _version_skew(p.version)
    if skew:
        return Check("store", WARN, f"{detail}; {skew}", "Use a server and qdrant-client of the "
                     "same minor version (see deploy/README.md for the pinned tag).")
    return Check("store", OK, detail)


def _version_skew(server: str | None) -> str | None:
    client = _version("qdrant-client")
    try:
        (smaj, smin), (cmaj, cmin) = (tuple(int(x) for x in v.split(".")[:2]) for v in (server, client))
    except (AttributeError, ValueError):
        return None
    if smaj != cmaj or abs(smin - cmin) > 1:
        return f"qdrant-client {client} is more than one minor version away from the server"
    return None


def _check_embedded(root: Path) -> Check:
    from regionmir.errors import StoreError, StoreLockedError
    from regionmir.store.damage import DamagedCollectionError

    if not root.is_dir():
        return Check("store", WARN, f"no embedded store at {root} yet",
                     "Run `regionmir ingest ARCHIVE` to create it, or set QDRANT_URL for a server.")
    from regionmir.store.embedded import EmbeddedStore

    try:
        store = EmbeddedStore(root)
    except StoreError as e:  # a full disk: refused before the engine maps anything
        return Check("store", FAIL, str(e), "Free disk space; the stored points are intact.")
    counts, locked, lost = [], [], []
    try:
        for name in store.collections():
            try:
                counts.append(f"{name} ({store.count(name)} points)")
                lost += _lost_points(store, name)
            except StoreLockedError:
                locked.append(name)
            except DamagedCollectionError as e:
                return Check("store", FAIL, e.detail, e.fix)
            except StoreError as e:
                return _store_failure(root / name, e)
    finally:
        store.close()
    detail = f"embedded store {root}; collections: {', '.join(counts) or 'none yet'}"
    if lost:
        return Check("store", FAIL, f"{detail}; {'; '.join(lost)}",
                     "Run `regionmir ingest ARCHIVE` (with the --collection it was filled with): it "
                     "stores again the images whose points are missing.")
    if locked:
        return Check("store", WARN, f"{detail}; in use by another process: {', '.join(locked)}",
                     "An ingest is probably running; other processes get 'in use' until it ends.")
    if not counts:
        return Check("store", WARN, detail, "Run `regionmir ingest ARCHIVE` to fill it.")
    return Check("store", OK, detail)


def _lost_points(store, name: str) -> list[str]:
    """What the ledgers of collection ``name`` list beyond what the store holds ([] when nothing).

    A damaged segment file can drop points while the ledger still lists their images, so an
    ingest would skip them; the ingest repairs that (:meth:`Ledger.reconcile`), once told to run.
    """
    from regionmir.ingest.ledger import ledger_family, ledger_points

    token = str(store.collection_meta(name).get("ingest_token", ""))
    images, expected = ledger_points(ledger_family(store.location, name), token)
    have = store.count(name)
    if have >= expected:
        return []
    gap = (f"collection {name!r} holds {have} points but its ingest ledger lists {images} images "
           f"with {expected} points: the store lost {expected - have} (damaged store files?)")
    return [gap]


def _store_failure(folder: Path, error: Exception) -> Check:
    """Why a collection folder would not open: read-only, full disk, or really damaged."""
    import errno
    import shutil

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as e:
        if e.errno == errno.ENOSPC:
            return Check("store", FAIL, f"{folder}: the disk is full ({e.strerror})",
                         "Free disk space or move REGIONMIR_HOME to a disk with room; the stored "
                         "points are intact.")
        return Check("store", FAIL, f"{folder} is not writable ({e.strerror or e})",
                     "Fix the folder's permissions (or remount it read-write), or set REGIONMIR_HOME "
                     "to a writable copy; the stored points are intact, nothing needs restoring.")
    free = shutil.disk_usage(folder).free
    if free < 64 * 2**20:
        return Check("store", FAIL, f"{folder}: only {free // 2**20} MiB free on its disk ({error})",
                     "Free disk space; the stored points are intact.")
    return Check("store", FAIL, f"{folder}: {error}",
                 "The collection's files are damaged: restore the folder from a backup, or delete "
                 "it and re-ingest (`regionmir ingest ARCHIVE`).")


def run_all(model: str | Path | None = None, url: str | None = None,
            api_key: str | None = None, timeout: float = 1.0) -> list[Check]:
    """Every check, in report order."""
    model_check, model_file = check_model_folder(model)
    rest = [check_codecs(), model_check, check_gpu(model_file), check_store(url, api_key, timeout),
            check_home(), check_salt()]
    return [check_python(), check_torch(), *rest]  # torch last: did any check import it?
