"""Archive generation: patients, studies and ids, rendering in worker processes, splits, summary."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regionmir.anatomy import ALL
from regionmir.annotations import Region, SceneGraph, write_scene_graph
from regionmir.archive import SPLITS, SplitRow, write_split
from regionmir.phantom import body, dicomio, findings, patient, render
from regionmir.regions import validate_box

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class Task:
    """One image to make: everything a worker needs, nothing it must share."""

    out_dir: str
    seed: int
    patient: int  # index
    study: int  # index within the patient
    size: int
    subject_id: str
    study_id: str
    dicom_id: str
    date: dt.date


def _ids(seed: int, patients: int, studies: int) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """MIMIC-like subject ids (1XXXXXXX), study ids (5XXXXXXX) and hyphenated hex dicom_ids."""
    rng = np.random.default_rng([seed, 7001])
    subj = 10_000_000 + rng.choice(9_999_999, size=patients, replace=False)
    stud = 50_000_000 + rng.choice(9_999_999, size=patients * studies, replace=False)
    hexes = rng.integers(0, 2**32, size=(patients * studies, 5), dtype=np.uint64)
    dicom = ["-".join(f"{int(v):08x}" for v in row) for row in hexes]
    sids = [[str(stud[i * studies + j]) for j in range(studies)] for i in range(patients)]
    dids = [[dicom[i * studies + j] for j in range(studies)] for i in range(patients)]
    return [str(s) for s in subj], sids, dids


def _dates(seed: int, patient_idx: int, studies: int) -> list[dt.date]:
    rng = np.random.default_rng([seed, patient_idx, 7002])
    first = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 70)))
    gaps = np.cumsum(np.r_[0, rng.integers(1, 700, size=studies - 1)])
    return [first + dt.timedelta(days=int(g)) for g in gaps]


def relative_path(subject_id: str, study_id: str, dicom_id: str) -> str:
    """``files/p1X/p1XXXXXXX/sXXXXXXXX/<dicom_id>.dcm`` as in MIMIC-CXR."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.dcm"


def _patient(seed: int, idx: int, subject_id: str) -> tuple[patient.Patient, dict, list]:
    """A patient, their site habits and chronic findings (same in every worker)."""
    rng = np.random.default_rng([seed, idx, 7003])
    p = patient.sample_patient(rng, idx, subject_id)
    habits = patient.site_habits(rng)
    th = body.Thorax(p, patient.sample_pose(np.random.default_rng([seed, idx, 7004]), 64, dt.date(2150, 1, 1)))
    return p, habits, findings.chronic(rng, th)


def make_image(t: Task) -> dict:
    """Render, write the DICOM and the scene graph of one image; returns its summary row."""
    p, habits, chronic = _patient(t.seed, t.patient, t.subject_id)
    rng = np.random.default_rng([t.seed, t.patient, t.study, 7005])
    pose = patient.sample_pose(rng, t.size, t.date, habits)
    fs = findings.sample(rng, body.Thorax(p, pose), chronic)
    out = render.render(p, pose, fs, rng)
    ids = {"subject_id": t.subject_id, "study_id": t.study_id, "dicom_id": t.dicom_id}
    ds = dicomio.dataset(dicomio.stored_values(out.image, pose), p, pose, ids, t.seed)
    rel = relative_path(t.subject_id, t.study_id, t.dicom_id)
    dicomio.write(Path(t.out_dir) / rel, ds, pose.compression)
    regions = []
    for a in ALL:
        if validate_box(out.boxes[a], pose.width, pose.height)[0] is None:
            continue  # cut off by the film's edge: the reader would drop it, as Chest ImaGenome omits such regions
        hit = [f for f in fs if a in f.regions()]
        regions.append(Region(a, out.boxes[a], tuple(sorted({f.label for f in hit})),
                              tuple(dict.fromkeys(f.phrase() for f in hit))))
    age = (t.date - p.birth).days // 365
    sg = SceneGraph(
        image_id=t.dicom_id, study_id=t.study_id, patient_id=t.subject_id, viewpoint=pose.view,
        width=pose.width, height=pose.height, regions=tuple(regions), gender=p.sex,
        age_decile=f"{age // 10 * 10}-{age // 10 * 10 + 10}", reason_for_exam="___ with cough, eval for pneumonia",
    )
    write_scene_graph(sg, Path(t.out_dir) / "scene_graph")
    return {"dicom_id": t.dicom_id, "subject_id": t.subject_id, "study_id": t.study_id, "path": rel,
            "view": pose.view, "findings": sorted({f.label for f in fs}),
            "compression": pose.compression or "none", "photometric": pose.photometric}


def split_patients(seed: int, subjects: list[str]) -> dict[str, str]:
    """subject_id -> split; ~70/15/15 by patient, every split non-empty when there are >= 3."""
    order = np.random.default_rng([seed, 7006]).permutation(len(subjects))
    n = len(subjects)
    n_valid = max(1, round(0.15 * n)) if n >= 3 else 0
    n_test = max(1, round(0.15 * n)) if n >= 3 else 0
    out = {}
    for rank, i in enumerate(order):
        out[subjects[i]] = "valid" if rank < n_valid else "test" if rank < n_valid + n_test else "train"
    return out


def generate_archive(
    out_dir: str | Path, seed: int = 0, patients: int = 20, studies_per_patient: int = 2,
    size: int = 1024, workers: int = 1, progress: Progress | None = None,
) -> dict:
    """Write a phantom archive in the MIMIC-CXR + Chest ImaGenome layout.

    The same ``seed`` gives byte-identical files, whatever ``workers`` is.

    Returns:
        A summary: counts of images, patients, studies per split, findings, views, and speed.

    Raises:
        ValueError: non-positive counts or a size below 64.
    """
    if patients < 1 or studies_per_patient < 1 or size < 64:
        raise ValueError("need patients >= 1, studies_per_patient >= 1 and size >= 64")
    out = Path(out_dir)
    subj, sids, dids = _ids(seed, patients, studies_per_patient)
    tasks = [Task(str(out), seed, i, j, size, subj[i], sids[i][j], dids[i][j], d)
             for i in range(patients) for j, d in enumerate(_dates(seed, i, studies_per_patient))]
    start = time.perf_counter()
    rows = list(_run(tasks, workers, progress))
    seconds = time.perf_counter() - start
    split_of = split_patients(seed, subj)
    for name in SPLITS:
        write_split(out, name, [SplitRow(r["dicom_id"], r["subject_id"], r["study_id"], r["path"])
                                for r in rows if split_of[r["subject_id"]] == name])
    labels = Counter(label for r in rows for label in r["findings"])
    return {
        "out_dir": str(out), "seed": seed, "images": len(rows), "patients": patients,
        "studies": len(rows), "size": size, "workers": workers,
        "splits": {s: sum(split_of[r["subject_id"]] == s for r in rows) for s in SPLITS},
        "normal_images": sum(not r["findings"] for r in rows), "findings": dict(sorted(labels.items())),
        "views": dict(Counter(r["view"] for r in rows)),
        "compression": dict(Counter(r["compression"] for r in rows)),
        "seconds": round(seconds, 3), "images_per_s": round(len(rows) / max(seconds, 1e-9), 2),
    }


def _run(tasks: list[Task], workers: int, progress: Progress | None):
    total = len(tasks)
    if progress:
        progress(0, total)
    if workers <= 1 or total <= 1:
        for n, t in enumerate(tasks, 1):
            yield make_image(t)
            if progress:
                progress(n, total)
        return
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(min(workers, total), initializer=render.texture_bank) as pool:
        for n, row in enumerate(pool.imap(make_image, tasks, chunksize=2), 1):
            yield row
            if progress:
                progress(n, total)
