"""Ingest stages: decode + find regions + crop -> encode -> points, each testable alone.

:mod:`regionmir.ingest.runner` composes them: :class:`Preparer` runs in worker processes
(:func:`regionmir.ingest.workers.prepared_stream`), :func:`batches` groups whole images, :func:`encode` and
:func:`to_points` run in the main process, and the upsert is ``Store.upsert``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regionmir.annotations import Region
from regionmir.archive import Archive, dangling_link, study_from_path
from regionmir.errors import RegionMIRError
from regionmir.privacy import mask_path, shown_image_id, shown_path
from regionmir.regions import CTR_DECIMALS, CropSpec, cardiothoracic_ratio, crop_regions

log = logging.getLogger("regionmir")


@dataclass(frozen=True)
class ImageTask:
    """One DICOM of the archive, before decoding."""

    path: Path
    rel: str  # path relative to the archive root (payload `path`)
    image_id: str  # dicom_id = file stem


@dataclass
class Prepared:
    """An image decoded and cropped: everything a point needs except its vector."""

    task: ImageTask
    key: str  # SOPInstanceUID (point id seed); the image id when the file has none
    fields: dict  # image-level payload: image_id, study_id, patient, view, modality, path, box_source, *_uid, ctr
    regions: list[dict]  # per region: anatomy, box, findings, confidence
    crops: np.ndarray | None  # (R, S, S) float32 in [0, 1], one per region; None once encoded
    embeddings: np.ndarray | None = None  # (R, D) float32 when the worker encoded the crops
    notes: list[str] = field(default_factory=list)  # what the report should say (dropped boxes, ...)


@dataclass(frozen=True)
class Skipped:
    """An image that yields no points: ``kind`` is "failed" or "unlabeled"."""

    task: ImageTask
    kind: str
    reason: str
    path: str | None = None  # as a report may show it (patient parts masked); None: not known
    image_id: str | None = None  # as a report may show it (see privacy.shown_image_id); None: not known


# ----------------------------------------------------------------------------- stages


def crop(image: np.ndarray, regions: Sequence[Region], spec: CropSpec) -> np.ndarray:
    """Crops of ``regions`` from ``image``: ``(R, S, S)`` float32, never flipped."""
    return crop_regions(image, [r.box for r in regions], spec)


class Preparer:
    """Decode + find regions + crop one image (runs in a worker process).

    Regions come from the image's scene graph or the gold CSV; images with neither are
    located by the localizer when the model folder has one, else reported as unlabeled.
    With ``encoder`` (an encoder file, CPU) the worker also encodes its crops on one thread
    and returns ``(R, D)`` embeddings instead of ``(R, S, S)`` crops: on a CPU machine every
    core then decodes, crops and encodes whole films, and 30x less data crosses processes.
    """

    def __init__(self, root: Path, spec: CropSpec, localizer: Path | None = None,
                 encoder: Path | None = None, hash_paths: bool = False):
        self.archive = Archive(root)
        self.spec = spec
        self.hash_paths = hash_paths  # payload paths and image ids as salted hashes only
        self.localizer_file = localizer  # the model folder's localizer.onnx, if it has one
        self.encoder_path = encoder
        self._encoder = None
        self._localizer = None
        self._localizer_loaded = False

    def encoder(self):
        """The worker's one-thread CPU encoder, loaded on first use."""
        if self._encoder is None:
            from regionmir.inference.encoder import Encoder

            self._encoder = Encoder(self.encoder_path, device="cpu", threads=1)
        return self._encoder

    def __getstate__(self) -> dict:  # sent to worker processes: without loaded models
        return {**self.__dict__, "_encoder": None, "_localizer": None, "_localizer_loaded": False}

    def localizer(self):
        """The localizer of the model folder, loaded on first use; None when there is none."""
        if not self._localizer_loaded:
            from regionmir.inference.localizer import Localizer

            if self.localizer_file is not None:
                self._localizer = Localizer(self.localizer_file, threads=1)  # one thread per worker
            self._localizer_loaded = True
        return self._localizer

    def find_regions(self, task: ImageTask, pixels: np.ndarray) -> tuple[list[Region], str, dict, list[str]]:
        """``(regions, box_source, scene-graph fields, notes)``; no regions when none can be found.

        Annotated boxes are checked against the decoded image (scene graphs of real archives
        do not know its size): boxes outside it are dropped and said in ``notes``; an image
        whose every box was dropped falls back to the localizer, and ``notes`` says that too.
        """
        notes: list[str] = []
        sg = self.archive.scene_graph(task.image_id)
        if sg is not None:
            regions, notes = self._checked(sg.regions, pixels.shape, list(sg.dropped))
            if regions:
                regions, twice = first_of_each(regions)
                extra = {"study_id": sg.study_id or None, "view": sg.viewpoint or None, "pid": sg.patient_id}
                return regions, "annotation", extra, _box_notes(notes) + twice
        gold = self.archive.gold.get(task.image_id)
        if gold:
            regions, gold_notes = self._checked(gold, pixels.shape, [])
            notes += gold_notes
            if regions:
                regions, twice = first_of_each(regions)
                return regions, "annotation", {}, _box_notes(notes) + twice
        notes = _box_notes(notes)
        loc = self.localizer()
        if loc is not None:
            if sg is not None or gold:
                notes.append("no usable annotated box: regions placed by the localizer instead")
            return list(loc.locate(pixels)), "predicted", {}, notes
        return [], "", {}, notes

    @staticmethod
    def _checked(regions, shape: tuple[int, int], notes: list[str]) -> tuple[list[Region], list[str]]:
        """``regions`` clipped to the image of ``shape``; the unusable ones named in ``notes``."""
        from dataclasses import replace

        from regionmir.regions import validate_box

        h, w = shape
        kept = []
        for r in regions:
            box, reason = validate_box(r.box, w, h)
            if box is None:
                notes.append(f"{r.anatomy.bbox_name}: {reason}")
            else:
                kept.append(r if box == r.box else replace(r, box=box))
        return kept, notes

    def __call__(self, task: ImageTask) -> Prepared | Skipped:
        from regionmir.dicom import read_image
        from regionmir.privacy import pseudonym

        try:  # everything that reads the file's values: one bad film fails alone
            rad = read_image(task.path)
            regions, source, extra, notes = self.find_regions(task, rad.pixels)
            crops = crop(rad.pixels, regions, self.spec) if regions else None  # (R, S, S)
            embeddings = None if crops is None or self.encoder_path is None else self._embed(crops)
        except Exception as e:  # noqa: BLE001 - a bad file must not stop the run
            return self._failed(task, e)
        h = rad.header
        pid = h.patient_id or extra.get("pid")  # raw: only pseudonymised or masked below
        shown, image_id = self.shown(task, (pid, *h.identifying))
        if not regions:
            why = "no scene graph or gold boxes, and no localizer"
            return Skipped(task, "unlabeled", "; ".join([why, *notes]), shown, image_id)
        fields = {
            "image_id": image_id,
            "study_id": (extra.get("study_id") or study_from_path(mask_path(task.rel, pid, *h.identifying))
                         or h.study_instance_uid),
            "patient": pseudonym(pid),
            "view": h.view or extra.get("view"),
            "modality": h.modality,
            "path": shown,
            "box_source": source,  # "annotation" or "predicted", for all its regions
            # the UIDs a viewer needs to open the image in the PACS (none names the patient)
            "study_uid": h.study_instance_uid,
            "series_uid": h.series_instance_uid,
            "sop_uid": h.sop_instance_uid,
            **film_ctr(regions),  # the cardiothoracic ratio, where the film has heart and lung boxes
        }
        described = [
            {
                "anatomy": r.anatomy.slug,
                "box": payload_box(r.box),
                "findings": sorted(r.findings),
                "confidence": None if r.confidence is None else float(r.confidence),
            }
            for r in regions
        ]
        key = h.sop_instance_uid or task.image_id
        if embeddings is None:
            return Prepared(task, key, fields, described, crops, notes=notes)
        return Prepared(task, key, fields, described, None, embeddings, notes=notes)

    def shown(self, task: ImageTask, patient: Sequence[str | None]) -> tuple[str, str]:
        """``(path, image id)`` of ``task`` as payloads, reports and the ledger show them: no part
        names the patient of header values ``patient`` (or salted hashes, with ``hash_paths``)."""
        return (shown_path(task.rel, *patient, hash_all=self.hash_paths),
                shown_image_id(task.image_id, *patient, hash_all=self.hash_paths))

    def _failed(self, task: ImageTask, error: Exception) -> Skipped:
        """The report's record of a file that could not be prepared, its names shown as payloads do."""
        from regionmir.dicom import patient_values

        shown, image_id = self.shown(task, patient_values(task.path))
        if dangling_link(task.path):  # its target's path is not shown: it may name the patient
            reason = "a symbolic link to a file that does not exist: restore the file or remove the link"
        elif isinstance(error, RegionMIRError):
            reason = getattr(error, "reason", None) or str(error)
        else:
            reason = f"{type(error).__name__}: {error}"
        reason = reason.replace(str(task.path), shown)
        if image_id != task.image_id:  # e.g. a scene graph file named by it
            reason = reason.replace(task.image_id, image_id)
        return Skipped(task, "failed", reason, shown, image_id)

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        """``(R, D)`` embeddings of one film's crops by the worker's encoder.

        Raises:
            RegionMIRError: a non-finite embedding (the store would refuse the whole batch).
        """
        embeddings = self.encoder().embed(crops, len(crops))[0]
        if not np.isfinite(embeddings).all():
            raise RegionMIRError("the encoder gave non-finite values for this image's crops")
        return embeddings


def film_ctr(regions: Sequence[Region]) -> dict:
    """``{"ctr": ratio}`` of a film's regions (:func:`~regionmir.regions.cardiothoracic_ratio`,
    rounded to ``regions.CTR_DECIMALS``), or ``{}`` when it lacks the heart or a lung box: the payload
    field is absent then, never null, so ``--where ctr<0.45`` never meets a film without one."""
    ratio = cardiothoracic_ratio({r.anatomy.slug: r.box for r in regions})
    return {} if ratio is None else {"ctr": round(float(ratio), CTR_DECIMALS)}


def payload_box(box) -> list[float | int]:
    """``box.as_list()`` with whole-pixel coordinates as ints (annotated boxes always are).

    The same numbers in JSON; the engine converts an int payload value in two thirds of a
    float's time, 0.5 ms of an ingest's main-process CPU per film of 36 regions.
    """
    # float(v): a box clipped to the image edge holds the image's int width (int.is_integer is 3.12+)
    return [int(v) if float(v).is_integer() else v for v in box.as_list()]


def first_of_each(regions: Sequence[Region]) -> tuple[list[Region], list[str]]:
    """The first box of each anatomy, and a note per anatomy given more than one box.

    A point id is made of the image and the anatomy: a second box of the same anatomy would
    overwrite the first's point (the last box winning, silently). The first is kept, as a
    reader of the scene graph sees it first, and the report names the anatomy.
    """
    kept, counts = {}, {}
    for r in regions:
        kept.setdefault(r.anatomy, r)
        counts[r.anatomy] = counts.get(r.anatomy, 0) + 1
    notes = [f"{a.bbox_name}: {n} annotated boxes, the first is used" for a, n in counts.items() if n > 1]
    return list(kept.values()), notes


def _box_notes(dropped: list[str]) -> list[str]:
    """One report note for the boxes dropped from an image (none when nothing was dropped)."""
    if not dropped:
        return []
    return [f"dropped {len(dropped)} annotated box(es): " + "; ".join(dropped)]


def encode(encoder, batch: Sequence[Prepared], batch_size: int) -> np.ndarray:
    """Embeddings ``(sum R, D)`` of all crops of ``batch``, in order (those the workers made, if they did)."""
    if all(p.embeddings is not None for p in batch):
        return np.concatenate([p.embeddings for p in batch], axis=0)
    crops = np.concatenate([p.crops for p in batch], axis=0)  # (sum R, S, S)
    embeddings, _ = encoder.embed(crops, batch_size=batch_size)
    return embeddings


def to_points(batch: Sequence[Prepared], embeddings: np.ndarray, model_id: str) -> list:
    """One :class:`~regionmir.store.PointRecord` per region, ids from (SOP, anatomy, model)."""
    from regionmir.store import PointRecord, point_id

    points, k = [], 0
    for p in batch:
        image = {**p.fields, "model_id": model_id}  # shared by the image's points: one object
        for region in p.regions:
            points.append(PointRecord(point_id(p.key, region["anatomy"], model_id), embeddings[k], region, image))
            k += 1
    return points


def batches(stream: Iterable[Prepared | Skipped], batch_size: int, on_skip: Callable[[Skipped], None]) -> Iterator[list[Prepared]]:
    """Group whole prepared images until they hold at least ``batch_size`` crops."""
    batch, n = [], 0
    for item in stream:
        if isinstance(item, Skipped):
            on_skip(item)
            continue
        batch.append(item)
        n += len(item.regions)
        if n >= batch_size:
            yield batch
            batch, n = [], 0
    if batch:
        yield batch
