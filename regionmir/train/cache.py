"""The on-disk crop cache of a training run: every crop cut once (resumable), read back by rows.

A split becomes ``<name>.npy`` (views ``(N, V, S, S)``, the ``.npy`` format, so numpy can open it
too), ``<name>.labels.npy`` (N,), ``<name>.films.json`` (the image id of each film),
``<name>.starts.npy`` (film i's crops are rows ``starts[i]:starts[i + 1]``) and ``<name>.json``
(what was asked for and how many images are done). Version 1 kept one image id per crop
(``<name>.ids.json``): 36 strings a film, in the trainer and in every loader worker; such a cache
is cut again. Crops are cut image by image with :func:`regions.crop_regions`, exactly as
:func:`regionmir.train.data.build_cropset` cuts them, and written with ``pwrite``; rows are read
back with ``pread``. Nothing is memory-mapped, so the process's RSS stays flat however large the
cache grows (the kernel's page cache holds what fits). A stopped cut resumes at the first image not
yet recorded as done; a cache made for another split, crop spec or jitter is recut.
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
from regionmir.train.data import image_views
from regionmir.train.splits import SplitScan

log = logging.getLogger("regionmir")

VERSION = 2  # bump when the cache layout or the crop definition changes
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
    films: list[str]  # (images,) image id of each film
    starts: np.ndarray  # (images + 1,) int64: film i's crops are rows starts[i]:starts[i + 1]
    _fd: int | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.shape[0]

    def image_id(self, row: int) -> str:
        """The image id of crop ``row``."""
        return self.films[int(np.searchsorted(self.starts, row, side="right")) - 1]

    @property
    def image_ids(self) -> list[str]:
        """``(N,)`` image id of every crop, made on demand (36 strings a film: not kept)."""
        counts = np.diff(self.starts)
        return [film for film, n in zip(self.films, counts.tolist()) for _ in range(n)]

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


def cut_split(scan: SplitScan, classes: Sequence[Anatomy], spec: CropSpec, folder: Path, name: str,
              jitter_views: int = 3, jitter: float = 0.08, seed: int = 0, dtype=np.float16,
              on_image: Callable[[int], None] | None = None, read=None,
              note: Callable[[str], None] | None = None) -> DiskCrops:
    """The crops of the images of ``scan`` in ``folder/name.npy``, cut where missing.

    ``read(path) -> (H, W) float32`` decodes an image (default :func:`regionmir.dicom.read_image`).
    ``on_image(n)`` is called after each image cut (and for each image already in the cache);
    ``note(text)`` is told why a cache found there is cut again.

    Raises:
        AnnotationError: no region of ``classes`` in the split.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels, starts = scan.labels(classes)  # (N,), (images + 1,)
    n = len(labels)
    if n == 0:
        raise AnnotationError("No labeled regions found: the split has no scene-graph boxes to train on.")
    shape = (n, 1 + jitter_views, spec.size, spec.size)
    order = hashlib.sha256()
    for i, image_id in enumerate(scan.image_ids):  # the ids in split order, "\n"-joined
        order.update(("\n" if i else "").encode() + image_id.encode())
    key = {"version": VERSION, "split": scan.fingerprint, "order": order.hexdigest()[:16],
           "images": len(scan), "classes": [a.slug for a in classes], "spec": [spec.size, spec.context],
           "jitter_views": jitter_views, "jitter": jitter, "seed": seed, "dtype": np.dtype(dtype).name}
    data, manifest = folder / f"{name}.npy", folder / f"{name}.json"
    done = _images_done(data, manifest, key, note)
    if done == 0:
        (folder / f"{name}.ids.json").unlink(missing_ok=True)  # version 1's per-crop ids
        np.lib.format.open_memmap(data, mode="w+", dtype=dtype, shape=shape)._mmap.close()  # sparse file + header
        np.save(folder / f"{name}.labels.npy", labels)
        np.save(folder / f"{name}.starts.npy", starts)
        (folder / f"{name}.films.json").write_text(json.dumps(scan.image_ids))
        _write_json(manifest, {"key": key, "images_done": 0, "crops": n})
    crops = DiskCrops(data, shape, np.dtype(dtype), _header_bytes(data), np.load(folder / f"{name}.labels.npy"),
                      tuple(classes), json.loads((folder / f"{name}.films.json").read_text()),
                      np.load(folder / f"{name}.starts.npy"))
    for i in range(done):
        if on_image:
            on_image(int(starts[i + 1] - starts[i]))
    _cut(scan, crops, done, spec, jitter_views, jitter, seed, manifest, key, on_image, read)
    return crops


def _images_done(data: Path, manifest: Path, key: dict, note) -> int:
    """Images of ``data`` already cut for ``key`` (0 when there is no cache, or one for other settings)."""
    if not (manifest.is_file() and data.is_file()):
        return 0
    state = json.loads(manifest.read_text())
    if state.get("key") == key:
        return int(state["images_done"])
    old = (state.get("key") or {}).get("version")
    why = (f"was made by an older RegionMIR (crop cache version {old}, now {VERSION})" if old != VERSION
           else "was made for other data or settings")
    text = f"crop cache {data} {why}: cutting it again"
    log.info(text)
    if note:
        note(text)
    return 0


def _cut(scan: SplitScan, crops: DiskCrops, done: int, spec, jitter_views, jitter, seed, manifest, key,
         on_image, read) -> None:
    """Cut images ``done..`` into ``crops.file``, recording progress every FLUSH_EVERY images."""
    if done == len(scan):
        return
    if read is None:
        from regionmir.dicom import read_image

        def read(path):
            return read_image(path).pixels

    classes = set(crops.classes)
    fd = os.open(crops.file, os.O_WRONLY)
    try:
        starts = crops.starts
        for i in range(done, len(scan)):
            path, sg = scan.item(i)
            views = image_views(read(path), sg, classes, spec, jitter_views, jitter, (seed, i))
            if len(views) != starts[i + 1] - starts[i]:  # scene graph and pixels disagree: a bug
                raise AnnotationError(f"{sg.image_id}: {len(views)} crops, expected {starts[i + 1] - starts[i]}")
            os.pwrite(fd, np.ascontiguousarray(views.astype(crops.dtype)).tobytes(),
                      crops.offset + int(starts[i]) * crops.row_bytes)
            if (i + 1) % FLUSH_EVERY == 0 or i + 1 == len(scan):
                os.fsync(fd)
                _write_json(manifest, {"key": key, "images_done": i + 1, "crops": len(crops)})
            if on_image:
                on_image(len(views))
    finally:
        os.close(fd)
