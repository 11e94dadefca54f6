"""Evaluation runner: encode a held-out split, search a store of the train split, score the hits.

Stages, each a small callable: :func:`split_tasks` (labelled images of a split),
:func:`encode_split` (decode -> crop -> encode with every model, via the ingest stages, so the
points carry exactly the payloads an ingest writes), :func:`fill_collection` (the real store),
:func:`run_queries` (store searches per query region), :func:`~regionmir.evaluation.summary.summarize`
(metrics from :mod:`regionmir.evaluation.metrics`). :func:`evaluate` composes them; :mod:`regionmir.evaluation.report` writes
``report.md``, ``report.json`` and the plots.

Retrieval goes through ``Store.search`` of an embedded (qdrant-edge) store in a temporary
folder. Metrics use exact (brute-force) search by default (``exact=True``); the same queries
are also run through the HNSW index, and the ANN recall@k against exact search is reported.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regionmir.archive import Archive
from regionmir.evaluation.summary import summarize

log = logging.getLogger("regionmir")


@dataclass(frozen=True)
class EvalConfig:
    """What `regionmir evaluate` was asked to do."""

    archive: Path
    model: Path  # model folder (encoder.onnx, report.json, exported baselines) or one .onnx
    out: Path
    ks: tuple[int, ...] = (1, 5, 10)
    split: str = "test"  # the queries; the reference collection is always the train split
    exact: bool = True  # metrics from exact search; False: from the HNSW (ANN) search
    curve_depth: int = 50  # hits per query for the precision-recall curve (>= max(ks))
    workers: int = 0  # decode/crop processes (0: in-process)
    device: str = "auto"
    plots: bool = True

    @property
    def depth(self) -> int:
        return max(max(self.ks), self.curve_depth)


@dataclass
class Encoded:
    """One split encoded by one model: points (with ingest payloads) and anatomy logits."""

    points: list = field(default_factory=list)  # store.PointRecord, one per region
    logits: list = field(default_factory=list)  # (R, C) arrays, concatenated by `logit_matrix`
    skipped: list[str] = field(default_factory=list)  # "image_id: reason"

    def logit_matrix(self) -> np.ndarray:
        return np.concatenate(self.logits) if self.logits else np.zeros((0, 0), np.float32)


# ----------------------------------------------------------------------------- encoding


def split_tasks(archive: Archive, split: str) -> tuple[list, int]:
    """Ingest tasks for the images of ``split`` that have labelled regions, and how many lack them."""
    from regionmir.ingest.stages import ImageTask

    tasks, unlabeled = [], 0
    for row in archive.split(split):
        if archive.regions(row.dicom_id) is None:
            unlabeled += 1
            continue
        tasks.append(ImageTask(archive.root / row.path, row.path, row.dicom_id))
    return tasks, unlabeled


def encode_split(archive: Archive, tasks: Sequence, encoders: Sequence, workers: int = 0,
                 batch_size: int = 64) -> list[Encoded]:
    """Decode and crop every image once per crop spec, and encode the crops with each encoder.

    Returns:
        One :class:`Encoded` per encoder, in the order of ``encoders``.
    """
    from regionmir.ingest.stages import Preparer, batches, to_points
    from regionmir.ingest.workers import prepared_stream

    out = [Encoded() for _ in encoders]
    by_spec: dict = defaultdict(list)
    for i, enc in enumerate(encoders):
        by_spec[enc.spec].append(i)
    for spec, members in by_spec.items():
        skipped: list[str] = []
        stream = prepared_stream(Preparer(archive.root, spec), tasks, workers)
        for batch in batches(stream, batch_size, lambda s: skipped.append(f"{s.task.image_id}: {s.reason}")):
            crops = np.concatenate([p.crops for p in batch])  # (sum R, S, S)
            for i in members:
                emb, logits = encoders[i].embed(crops, batch_size=batch_size)
                out[i].points.extend(to_points(batch, emb, encoders[i].model_id))
                out[i].logits.append(logits)
        for i in members:
            out[i].skipped = skipped
    return out


def fill_collection(store, name: str, encoder, points: Sequence, build_index: bool = True) -> None:
    """Create ``name`` for ``encoder``'s vectors, upsert ``points`` and build the HNSW index."""
    store.create_collection(name, encoder.dim, {"model_id": encoder.model_id, "purpose": "evaluation"})
    store.upsert(name, list(points))
    if build_index:
        store.build_index(name)


# ----------------------------------------------------------------------------- queries


def _key(payload: dict) -> tuple[str, tuple[str, ...]]:
    """(anatomy, sorted findings): the relevance key of the findings metrics."""
    return payload["anatomy"], tuple(sorted(payload.get("findings") or ()))


def _ranked(hits: Sequence) -> list:
    """Hits by descending score, ties by id (exact and ANN rank tied hits alike)."""
    from regionmir.evaluation.metrics import rank_order

    if not hits:
        return []
    order = rank_order([h.score for h in hits], [h.id for h in hits])
    return [hits[i] for i in order]


def run_queries(store, ref: str, own: str, queries: Encoded, ref_points: Sequence, own_points: Sequence,
                anatomies: Sequence, cfg: EvalConfig) -> list[dict]:
    """Search for every query region and record what the metrics need.

    * ``ref`` (train split), no filter: anatomies of the hits (same-anatomy fraction);
    * ``ref`` filtered to the query's anatomy: relevance = same finding set;
    * ``own`` (the query split itself) filtered to the anatomy, excluding the query's own
      study: relevance = same patient (their other studies are in this split, not in train);
    * the filtered ``ref`` search again by the other method (ANN vs exact) for ANN recall.

    Returns:
        One dict per query region (see the keys set below).
    """
    from regionmir.evaluation.metrics import recall_vs_exact
    from regionmir.store import Filter

    ref_pl, own_pl = [p.full_payload for p in ref_points], [p.full_payload for p in own_points]
    n_ref = Counter(_key(p) for p in ref_pl)
    n_anat = Counter(p["anatomy"] for p in ref_pl)
    n_own_anat = Counter(p["anatomy"] for p in own_pl)
    n_own_study = Counter((p["anatomy"], p["study_id"]) for p in own_pl)
    per_patient = Counter((p.get("patient"), p["anatomy"]) for p in own_pl)
    per_study = Counter((p.get("patient"), p["anatomy"], p["study_id"]) for p in own_pl)
    logits = queries.logit_matrix()
    rows, k_max = [], max(cfg.ks)
    for q, point in enumerate(queries.points):
        pl = point.full_payload
        anat, finds = _key(pl)
        by_anat = Filter(must={"anatomy": anat})
        plain = _ranked(store.search(ref, point.vector, cfg.depth, exact=cfg.exact))
        hits = _ranked(store.search(ref, point.vector, cfg.depth, filter=by_anat, exact=cfg.exact))
        other = store.search(ref, point.vector, k_max, filter=by_anat, exact=not cfg.exact)
        approx, exact = (hits[:k_max], other) if not cfg.exact else (other, hits[:k_max])
        own_filter = Filter(must={"anatomy": anat}, must_not={"study_id": pl["study_id"]})
        mates = _ranked(store.search(own, point.vector, k_max, filter=own_filter, exact=cfg.exact))
        pt = pl.get("patient")
        same_pt = per_patient[(pt, anat)] - per_study[(pt, anat, pl["study_id"])] if pt else 0
        rows.append({
            "anatomy": anat,
            "patient": pt or pl.get("image_id"),  # bootstrap cluster
            "abnormal": bool(finds),
            "predicted": anatomies[int(np.argmax(logits[q]))].slug if logits.size else None,
            "hit_anatomies": [h.payload["anatomy"] for h in plain],
            "anatomy_share": n_anat[anat] / len(ref_points),  # chance of a random hit
            "findings_rel": [_key(h.payload) == (anat, finds) for h in hits],
            "findings_rel_unfiltered": [_key(h.payload) == (anat, finds) for h in plain],
            "findings_n": n_ref[(anat, finds)],
            "findings_pool": n_anat[anat],  # what the anatomy-filtered search ranks
            "findings_pool_unfiltered": len(ref_points),
            "patient_rel": [pt is not None and h.payload.get("patient") == pt for h in mates],
            "patient_n": same_pt,
            "patient_pool": n_own_anat[anat] - n_own_study[(anat, pl["study_id"])],
            "ann_recall": {k: recall_vs_exact([h.score for h in approx], [h.score for h in exact], k)
                           for k in cfg.ks},
        })
    return rows


# ----------------------------------------------------------------------------- runner


def load_models(model: Path, device: str = "auto") -> list[tuple[str, object]]:
    """The encoder of ``model`` first, then every other encoder ONNX under its folder (baselines).

    Returns:
        ``(label, Encoder)`` pairs; labels are the models' strategies, made unique.

    Raises:
        ModelError: ``model`` holds no encoder (the message says how to train one).
    """
    from regionmir.errors import ModelError
    from regionmir.inference.encoder import Encoder
    from regionmir.inference.folder import ModelFolder

    paths = ModelFolder(model).onnx_files()
    main = paths[0]
    out, seen = [], Counter()
    for path in paths:
        try:
            enc = Encoder(path, device=device)
        except ModelError as e:
            if path == main:
                raise
            log.info("not an encoder, skipped: %s (%s)", path, e)
            continue
        label = enc.meta.strategy or path.parent.name
        seen[label] += 1
        out.append((label if seen[label] == 1 else f"{label}-{seen[label]}", enc))
    return out


def _describe(encoded: Encoded, tasks: Sequence, unlabeled: int) -> dict:
    payloads = [p.full_payload for p in encoded.points]
    return {
        "images": len(tasks) - len(encoded.skipped), "unlabeled_images": unlabeled,
        "failed_images": len(encoded.skipped), "regions": len(payloads),
        "abnormal_regions": sum(1 for p in payloads if p.get("findings")),
        "patients": len({p.get("patient") for p in payloads}),
        "studies": len({p.get("study_id") for p in payloads}),
    }


def _training_report(model: Path) -> dict | None:
    """The ``report.json`` that ``regionmir train`` wrote beside ``model`` (a folder or .onnx), or None."""
    import json

    from regionmir.inference.folder import ModelFolder

    path = ModelFolder(model).report
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None


def _training_result(enc) -> dict | None:
    """Held-out accuracy, macro accuracy and P@10 that the encoder's own training report gives."""
    results = (_training_report(enc.path) or {}).get("results") or {}
    r = results.get(enc.meta.strategy)
    return {k: r.get(k) for k in ("accuracy", "macro_accuracy", "precision_at_10")} if isinstance(r, dict) else None


ANN_NOTE = ("HNSW graph forced on every collection (indexing and full-scan thresholds 1 KB, "
            "m=16, ef_construct=100), built before searching")


def _eval_store(path: Path):
    """An embedded store whose collections get an HNSW graph however small they are.

    Qdrant's defaults leave collections under ~10 MB of vectors without a graph, so "ANN"
    search on an evaluation-sized collection would silently be exact.
    """
    from regionmir.store.embedded import EdgeOptions, EmbeddedStore

    return EmbeddedStore(path, EdgeOptions(indexing_threshold_kb=1, full_scan_threshold_kb=1))


def evaluate(cfg: EvalConfig) -> dict:
    """Run the whole evaluation and return the report (also what `report.json` holds).

    Raises:
        AnnotationError: a split is missing, empty, or the query split is the train split.
        ModelError: no encoder in ``cfg.model``.
    """
    from regionmir.errors import AnnotationError

    if cfg.split == "train":
        raise AnnotationError("--split train would search the train split for itself; use test or valid")
    t0 = time.perf_counter()
    archive = Archive(cfg.archive)
    models = load_models(cfg.model, cfg.device)
    ref_tasks, ref_unlabeled = split_tasks(archive, "train")
    q_tasks, q_unlabeled = split_tasks(archive, cfg.split)
    for name, tasks in (("train", ref_tasks), (cfg.split, q_tasks)):
        if not tasks:
            raise AnnotationError(f"The {name} split of {archive.root} has no image with labelled regions")
    encoders = [enc for _, enc in models]
    ref = encode_split(archive, ref_tasks, encoders, cfg.workers)
    qry = encode_split(archive, q_tasks, encoders, cfg.workers)
    t_encode = time.perf_counter() - t0
    results = []
    with tempfile.TemporaryDirectory(prefix="regionmir-eval-") as tmp:
        store = _eval_store(Path(tmp))
        try:
            for i, ((label, enc), r, q) in enumerate(zip(models, ref, qry)):
                t1 = time.perf_counter()
                fill_collection(store, f"train-{i}", enc, r.points)
                fill_collection(store, f"{cfg.split}-{i}", enc, q.points)
                rows = run_queries(store, f"train-{i}", f"{cfg.split}-{i}", q, r.points, q.points,
                                   enc.anatomies, cfg)
                results.append({
                    "label": label, "strategy": enc.meta.strategy, "backbone": enc.meta.backbone,
                    "model_id": enc.model_id, "path": str(enc.path), "embedding_dim": enc.dim,
                    "input_size": enc.spec.size, "search_seconds": round(time.perf_counter() - t1, 2),
                    "training_result": _training_result(enc),
                    **summarize(rows, cfg.ks, cfg.depth),
                })
        finally:
            store.close()
    return {
        "archive": str(archive.root), "split": cfg.split, "reference_split": "train",
        "ks": list(cfg.ks), "search": "exact" if cfg.exact else "ann",
        "store": f"embedded qdrant-edge in a temporary folder; {ANN_NOTE}",
        "data": {"train": _describe(ref[0], ref_tasks, ref_unlabeled),
                 cfg.split: _describe(qry[0], q_tasks, q_unlabeled)},
        "models": results, "training_report": _training_report(cfg.model),
        "seconds": {"encode": round(t_encode, 2), "total": round(time.perf_counter() - t0, 2)},
    }
