"""Region crops of real films: unlabeled for self-supervised (NT-Xent) pretraining, or
pseudo-labeled for fine-tuning.

The ``train`` films of a real-check folder (films.csv, see :mod:`regionmir.evaluation.real`), or every
film of a folder without films.csv (a hospital's own, unlabeled), are cut into region crops: the
true lung and heart (cardiac silhouette) boxes where the folder has them, and the boxes a localizer places for the rest. By default their anatomy labels are never used: NT-Xent only asks
that two augmented views of one crop agree, so this teaches the encoder what real films look
like while anatomy is still learnt from phantom labels. With ``labeled=True`` each crop keeps
the anatomy of its box (human truth for the lungs and heart, the localizer's naming for the rest: a
pseudo-label, self-training), so fine-tuning sees real appearance too. Films of the ``test``
split are never read here; a film that cannot be read is skipped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from regionmir.annotations import Region, SceneGraph
from regionmir.errors import AnnotationError, ImageReadError
from regionmir.regions import CropSpec
from regionmir.train.data import CropSet, build_cropset

log = logging.getLogger("regionmir")


def real_samples(folder: str | Path, localizer_path: str | Path | None, max_films: int = 0):
    """``(pixels, SceneGraph)`` of the folder's train films; regions from truth and the localizer."""
    from regionmir.anatomy import Anatomy
    from regionmir.dicom import read_image
    from regionmir.evaluation.real.films import training_films, truth_boxes
    from regionmir.inference.localizer import Localizer

    films = training_films(folder)[: max_films or None]
    if not films:
        raise AnnotationError(f"{folder}/films.csv has no films in the train split to pretrain on.")
    if localizer_path is None and not any(f.mask or f.boxes for f in films):
        raise AnnotationError(f"The films of {folder} have no lung masks or boxes: give --real-localizer "
                              "(a model folder with localizer.onnx) to place their regions.")
    loc = Localizer(localizer_path) if localizer_path else None
    skipped = 0
    for film in films:
        try:
            pixels = read_image(film.path).pixels
        except ImageReadError as err:
            skipped += 1
            log.warning("real film skipped: %s", err)
            continue
        regions = {a: Region(Anatomy.parse(a), b) for a, b in truth_boxes(film, pixels.shape).items()}
        if loc is not None:
            for r in loc.locate(pixels):
                regions.setdefault(r.anatomy.slug, Region(r.anatomy, r.box))
        h, w = pixels.shape
        yield pixels, SceneGraph(film.path.stem, "", "", film.view, w, h, tuple(regions.values()))
    if skipped:
        log.warning("%d of %d real films could not be read and were skipped", skipped, len(films))


def real_cropset(folder: str | Path, classes, spec: CropSpec, localizer_path: str | Path | None = None,
                 views: int = 3, seed: int = 0, max_films: int = 0, labeled: bool = False) -> CropSet:
    """Crops of the real train films, ``1 + views`` jittered views each; labels are the anatomy
    of each box with ``labeled``, else meaningless (0)."""
    crops = build_cropset(real_samples(folder, localizer_path, max_films), classes, spec,
                          jitter_views=views, seed=seed)
    if not labeled:
        crops.labels[:] = 0  # unlabeled: only the contrastive phase may use these
    log.info("real %s crops: %d from %s", "labeled" if labeled else "pretraining", len(crops), folder)
    return crops


class Joined:
    """Crops of ``a`` then ``b`` without copying them: the reading interface of a ``CropSet``.

    ``a`` may be the on-disk crop cache (``DiskCrops``), so the phantom crops stay on disk and
    only the (few) real crops of ``b`` are in memory.
    """

    def __init__(self, a, b: CropSet):
        if a.classes != b.classes:
            raise ValueError("crop sets of different anatomy lists cannot be joined")
        self.a, self.b = a, b
        self.labels = np.concatenate([a.labels, b.labels])  # (N,)
        self.classes = a.classes

    @property
    def image_ids(self) -> list[str]:
        """``(N,)`` image id of every crop, made on demand (not kept: the disk cache stores ids per film)."""
        return list(self.a.image_ids) + list(self.b.image_ids)

    def __len__(self) -> int:
        return len(self.a) + len(self.b)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` as ``(len(idx), V, S, S)`` in the dtype of ``a``."""
        idx = np.asarray(idx)
        first = idx < len(self.a)
        head = self.a.rows(idx[first])
        out = np.empty((len(idx), *head.shape[1:]), head.dtype)
        out[first] = head
        out[~first] = self.b.rows(idx[~first] - len(self.a)).astype(head.dtype)
        return out


def merged(a, b: CropSet) -> Joined:
    """One crop set of ``a`` then ``b`` (same crop size, views and anatomy list)."""
    return Joined(a, b)
