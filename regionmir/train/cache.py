"""The on-disk crop cache of a training run: every crop cut once (resumable), read back by rows.

A split becomes ``<name>.npy`` (views ``(N, V, S, S)``, the ``.npy`` format, so numpy can open
it too), ``<name>.labels.npy``, ``<name>.ids.json`` and ``<name>.json`` (what was asked for and
how many images are done). Crops are cut image by image with :func:`regions.crop_regions`,
exactly as :func:`regionmir.train.data.build_cropset` cuts them, and written with ``pwrite``;
rows are read back with ``pread``. Nothing is memory-mapped, so the process's RSS stays flat
however large the cache grows (the kernel's page cache holds what fits). A stopped cut resumes
at the first image not yet recorded as done; a cache made for another split, crop spec or
jitter is recut.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regionmir.anatomy import Anatomy
from regionmir.errors import AnnotationError
from regionmir.regions import CropSpec
from regionmir.train.data import fingerprint, image_views

log = logging.getLogger("regionmir")

VERSION = 1  # bump when the cache layout or the crop definition changes
FLUSH_EVERY = 64  # images between progress records (a kill recuts at most this many)


@dataclass
class DiskCrops:
    """A split's crops on disk; the same reading interface as an in-memory ``CropSet``."""

    file: Path
    shape: tuple[int, int, int, int]  # (N, V, S, S)
    dtype: np.dtype
    offset: int  # bytes before row 0 (the .npy header)
    labels: np.ndarray  # (N,) int64: position of the region's anatomy in `classes`
    classes: tuple[Anatomy, ...]
    image_ids: list[str]
    _fd: int | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:  # DataLoader workers open their own descriptor
        return {**self.__dict__, "_fd": None}

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:])) * self.dtype.itemsize

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` as ``(len(idx), V, S, S)`` (read in ascending file order)."""
        if self._fd is None:
            self._fd = os.open(self.file, os.O_RDONLY)
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        flat = out.reshape(len(idx), -1).view(np.uint8)  # (B, row_bytes)
        for k in np.argsort(idx, kind="stable"):
            data = os.pread(self._fd, self.row_bytes, self.offset + int(idx[k]) * self.row_bytes)
            flat[k] = np.frombuffer(data, np.uint8)
        return out

    def clean_rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``(n, S, S)`` float32 view-0 crops of rows ``start:stop`` (the inference crops)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return self.rows(np.arange(start, stop))[:, 0].astype(np.float32)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _header_bytes(file: Path) -> int:
    with open(file, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read(f)
        return f.tell()


def cut_split(pairs: Sequence[tuple], classes: Sequence[Anatomy], spec: CropSpec, folder: Path, name: str,
              jitter_views: int = 3, jitter: float = 0.08, seed: int = 0, dtype=np.float16,
              on_image: Callable[[int], None] | None = None, read=None) -> DiskCrops:
    """The crops of ``pairs`` (``(dicom_path, scene_graph)``) in ``folder/name.npy``, cut where missing.

    ``read(path) -> (H, W) float32`` decodes an image (default :func:`regionmir.dicom.read_image`).
    ``on_image(n)`` is called after each image cut (and for each image already in the cache).

    Raises:
        AnnotationError: no region of ``classes`` in the split.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {a: i for i, a in enumerate(classes)}
    kept = [[r.anatomy for r in sg.regions if r.anatomy in index] for _, sg in pairs]
    starts = np.concatenate([[0], np.cumsum([len(k) for k in kept])]).astype(np.int64)  # (images + 1,)
    n = int(starts[-1])
    if n == 0:
        raise AnnotationError("No labeled regions found: the split has no scene-graph boxes to train on.")
    shape = (n, 1 + jitter_views, spec.size, spec.size)
    order = hashlib.sha256("\n".join(sg.image_id for _, sg in pairs).encode()).hexdigest()[:16]
    key = {"version": VERSION, "split": fingerprint(sg for _, sg in pairs), "order": order,
           "images": len(pairs), "classes": [a.slug for a in classes], "spec": [spec.size, spec.context],
           "jitter_views": jitter_views, "jitter": jitter, "seed": seed, "dtype": np.dtype(dtype).name}
    data, manifest = folder / f"{name}.npy", folder / f"{name}.json"
    done = 0
    if manifest.is_file() and data.is_file():
        state = json.loads(manifest.read_text())
        if state.get("key") == key:
            done = int(state["images_done"])
        else:
            log.info("crop cache %s was made for other data or settings: cutting it again", data)
    if done == 0:
        np.lib.format.open_memmap(data, mode="w+", dtype=dtype, shape=shape)._mmap.close()  # sparse file + header
        np.save(folder / f"{name}.labels.npy", np.array([index[a] for k in kept for a in k], np.int64))
        (folder / f"{name}.ids.json").write_text(json.dumps([sg.image_id for (_, sg), k in zip(pairs, kept) for _ in k]))
        _write_json(manifest, {"key": key, "images_done": 0, "crops": n})
    crops = DiskCrops(data, shape, np.dtype(dtype), _header_bytes(data),
                      np.load(folder / f"{name}.labels.npy"), tuple(classes),
                      json.loads((folder / f"{name}.ids.json").read_text()))
    for i in range(done):
        if on_image:
            on_image(len(kept[i]))
    _cut(pairs, crops, starts, done, spec, jitter_views, jitter, seed, manifest, key, on_image, read)
    return crops


def _cut(pairs, crops: DiskCrops, starts, done: int, spec, jitter_views, jitter, seed, manifest, key,
         on_image, read) -> None:
    """Cut images ``done..`` into ``crops.file``, recording progress every FLUSH_EVERY images."""
    if done == len(pairs):
        return
    if read is None:
        from regionmir.dicom import read_image

        def read(path):
            return read_image(path).pixels

    classes = set(crops.classes)
    fd = os.open(crops.file, os.O_WRONLY)
    try:
        for i in range(done, len(pairs)):
            path, sg = pairs[i]
            views = image_views(read(path), sg, classes, spec, jitter_views, jitter, (seed, i))
            if len(views) != starts[i + 1] - starts[i]:  # scene graph and pixels disagree: a bug
                raise AnnotationError(f"{sg.image_id}: {len(views)} crops, expected {starts[i + 1] - starts[i]}")
            os.pwrite(fd, np.ascontiguousarray(views.astype(crops.dtype)).tobytes(),
                      crops.offset + int(starts[i]) * crops.row_bytes)
            if (i + 1) % FLUSH_EVERY == 0 or i + 1 == len(pairs):
                os.fsync(fd)
                _write_json(manifest, {"key": key, "images_done": i + 1, "crops": len(crops)})
            if on_image:
                on_image(len(views))
    finally:
        os.close(fd)
