"""Tests of the phantom archive generator (regionmir.phantom)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.ndimage import binary_dilation

from regionmir.anatomy import ALL, Anatomy
from regionmir.annotations import read_scene_graph
from regionmir.archive import SPLITS, Archive
from regionmir.phantom import dicomio, generate_archive, patient, preview, render
from regionmir.phantom.preview import display_pixels


def _digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every DICOM and JSON file under ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.suffix in (".dcm", ".json", ".csv")
    }


def _graphs(root: Path):
    arch = Archive(root)
    return [(p, read_scene_graph(arch.scene_graph_path(p.stem))) for p in arch.dicom_paths()]


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = generate_archive(tmp_path / "a", seed=3, patients=3, studies_per_patient=1, size=128)
    b = generate_archive(tmp_path / "b", seed=3, patients=3, studies_per_patient=1, size=128, workers=2)
    generate_archive(tmp_path / "c", seed=4, patients=3, studies_per_patient=1, size=128)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a["images"] == b["images"] == 3
    assert da == db and len(da) == 3 + 3 + 3  # dcm + json + 3 split csv
    assert set(da) != set(dc)


def test_layout_ids_and_split_by_patient(tiny_archive):
    arch = Archive(tiny_archive)
    paths = arch.dicom_paths()
    assert len(paths) == 12
    for p in paths:
        rel = p.relative_to(tiny_archive).parts
        assert rel[0] == "files" and rel[1] == "p" + rel[2][1:3]
        assert rel[2][1] == "1" and len(rel[2]) == 9 and rel[2][1:].isdigit()
        assert rel[3][:2] == "s5" and len(rel[3]) == 9
        assert [len(g) for g in p.stem.split("-")] == [8] * 5
        assert arch.scene_graph_path(p.stem).parent.name == "scene_graph"
    owners: dict[str, str] = {}
    rows = 0
    for name in SPLITS:
        split = arch.split(name)
        assert split, f"split {name} is empty"
        for r in split:
            assert owners.setdefault(r.subject_id, name) == name, "a patient in two splits"
            assert (tiny_archive / r.path).is_file()
            rows += 1
    assert rows == 12 and len(owners) == 6


def test_scene_graphs_have_36_regions_inside_the_image(tiny_archive):
    for path, sg in _graphs(tiny_archive):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert sg.image_id == path.stem and not sg.dropped
        assert (sg.width, sg.height) == (ds.Columns, ds.Rows)
        assert max(sg.width, sg.height) == 256
        assert {r.anatomy for r in sg.regions} == set(ALL)
        for r in sg.regions:
            b = r.box
            assert 0 <= b.x1 < b.x2 <= sg.width and 0 <= b.y1 < b.y2 <= sg.height, r.anatomy


def _mean(img: np.ndarray, box) -> float:
    return float(img[int(box.y1):int(np.ceil(box.y2)), int(box.x1):int(np.ceil(box.x2))].mean())


def test_boxes_enclose_their_structures(tiny_archive):
    for path, sg in _graphs(tiny_archive):
        img = display_pixels(path)
        mid = sg.width / 2
        box = {r.anatomy: r.box for r in sg.regions}
        rl, ll = box[Anatomy.RIGHT_LUNG], box[Anatomy.LEFT_LUNG]
        assert rl.center[0] < mid < ll.center[0], "patient's right lung must be on the image left"
        assert box[Anatomy.CARDIAC_SILHOUETTE].center[0] > box[Anatomy.SPINE].center[0]
        spine = _mean(img, box[Anatomy.SPINE])
        assert _mean(img, rl) < spine and _mean(img, ll) < spine
        assert _mean(img, box[Anatomy.RIGHT_MID_LUNG_ZONE]) < _mean(img, box[Anatomy.ABDOMEN])
        for zone in ("UPPER", "MID", "LOWER"):
            for side, lung in (("RIGHT", rl), ("LEFT", ll)):
                z = box[Anatomy[f"{side}_{zone}_LUNG_ZONE"]]
                assert lung.x1 <= z.x1 and z.x2 <= lung.x2 and lung.y1 <= z.y1 and z.y2 <= lung.y2
        assert box[Anatomy.RIGHT_UPPER_LUNG_ZONE].y2 <= box[Anatomy.RIGHT_LOWER_LUNG_ZONE].y1 + 1
        assert box[Anatomy.RIGHT_HEMIDIAPHRAGM].y1 < box[Anatomy.LEFT_HEMIDIAPHRAGM].y1 + 0.02 * sg.height
        assert box[Anatomy.TRACHEA].center[1] < box[Anatomy.CARINA].center[1] + 1


def test_dicom_headers_as_scanners_write_them(tiny_archive):
    seen = set()
    patients: dict[str, tuple] = {}
    for path, sg in _graphs(tiny_archive):
        ds = pydicom.dcmread(path)
        for tag in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID",
                    "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "ViewPosition",
                    "PixelSpacing", "ImagerPixelSpacing", "Modality", "PhotometricInterpretation"):
            assert tag in ds, tag
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.BitsAllocated == 16 and 12 <= ds.BitsStored <= 16 and ds.HighBit == ds.BitsStored - 1
        assert int(ds.pixel_array.max()) < (1 << ds.BitsStored)
        assert ds.Modality in ("CR", "DX") and ds.ViewPosition == sg.viewpoint in ("PA", "AP")
        assert ds.PatientID == sg.patient_id
        who = (str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex)
        assert patients.setdefault(ds.PatientID, who) == who, "patient data must be consistent"
        text = (tiny_archive / "scene_graph" / f"{path.stem}_SceneGraph.json").read_text()
        assert str(ds.PatientName) not in text and ds.PatientBirthDate not in text
        seen.add((ds.Modality, ds.PhotometricInterpretation, ds.file_meta.TransferSyntaxUID.name))
    assert {m for m, _, _ in seen} == {"CR", "DX"}
    assert {ts for _, _, ts in seen} >= {"Explicit VR Little Endian"}
    assert len({p for _, p, _ in seen}) == 2


@pytest.mark.parametrize("compression", ["rle", "j2k"])
@pytest.mark.parametrize("photometric,bits", [("MONOCHROME2", 12), ("MONOCHROME1", 16)])
def test_compressed_files_decode_to_the_uncompressed_pixels(tmp_path, compression, photometric, bits):
    rng = np.random.default_rng(0)
    p = patient.sample_patient(rng, 0, "10000001")
    pose = dataclasses.replace(patient.sample_pose(rng, 128, dt.date(2150, 1, 2)),
                               photometric=photometric, bits=bits, compression=compression)
    image = render.render(p, pose, [], rng).image
    stored = dicomio.stored_values(image, pose)
    ids = {"subject_id": p.subject_id, "study_id": "50000001", "dicom_id": "0" * 8}
    plain = dicomio.write(tmp_path / "plain.dcm", dicomio.dataset(stored, p, pose, ids, 0), None)
    packed = dicomio.write(tmp_path / "packed.dcm", dicomio.dataset(stored, p, pose, ids, 0), compression)
    a, b = pydicom.dcmread(plain), pydicom.dcmread(packed)
    assert not a.file_meta.TransferSyntaxUID.is_compressed and b.file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(a.pixel_array, stored) and np.array_equal(b.pixel_array, stored)
    assert a.SOPInstanceUID == b.SOPInstanceUID == b.file_meta.MediaStorageSOPInstanceUID


def test_archive_holds_compressed_files(tmp_path):
    generate_archive(tmp_path, seed=2, patients=20, studies_per_patient=1, size=64)
    syntaxes = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
                for p in Archive(tmp_path).dicom_paths()}
    assert "Explicit VR Little Endian" in syntaxes and "RLE Lossless" in syntaxes


def test_monochrome1_is_stored_inverted(tiny_archive):
    got = {}
    for path, sg in _graphs(tiny_archive):
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(float) / ((1 << ds.BitsStored) - 1)
        box = {r.anatomy: r.box for r in sg.regions}
        lung, spine = _mean(stored, box[Anatomy.RIGHT_LUNG]), _mean(stored, box[Anatomy.SPINE])
        got.setdefault(ds.PhotometricInterpretation, []).append(lung < spine)
    assert all(got["MONOCHROME2"]) and not any(got["MONOCHROME1"])


def test_findings_are_region_attributes(tiny_archive):
    labels, normal = set(), 0
    for path in (tiny_archive / "scene_graph").glob("*.json"):
        data = json.loads(path.read_text())
        sg = read_scene_graph(path)
        normal += not sg.findings
        for entry in data["attributes"]:
            for group in entry["attributes"]:
                for a in group:
                    cat, yes, label = a.split("|")
                    assert (cat, yes) == ("anatomicalfinding", "yes")
                    labels.add(label)
                    assert any(label in p.lower() or label.split()[0] in p.lower()
                               for p in entry["phrases"])
        for r in sg.regions:
            for f in r.findings:
                if r.anatomy.bbox_name.endswith("lung zone"):
                    parent = sg.region(Anatomy.parse(r.anatomy.side + " lung"))
                    assert f in parent.findings
    assert labels and 0 < normal < 12


def test_finding_vocabulary_over_a_larger_archive(tmp_path):
    s = generate_archive(tmp_path, seed=6, patients=30, studies_per_patient=1, size=64)
    assert set(s["findings"]) == {"nodule", "lung opacity", "consolidation", "pleural effusion",
                                  "pneumothorax", "enlarged cardiac silhouette", "atelectasis"}
    assert 0.25 <= s["normal_images"] / s["images"] <= 0.6


def test_preview_writes_pngs_and_a_montage(tiny_archive, tmp_path):
    paths = preview(tiny_archive, k=3, width=200)
    assert [p.suffix for p in paths] == [".png"] * 4 and paths[-1].name == "montage.png"
    assert all(p.stat().st_size > 1000 for p in paths)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="patients >= 1"):
        generate_archive(tmp_path, patients=0)


def test_boxes_are_the_bounding_boxes_of_the_rendered_masks():
    rng = np.random.default_rng(4)
    p = patient.sample_patient(rng, 0, "10000002")
    pose = dataclasses.replace(patient.sample_pose(rng, 200, dt.date(2150, 1, 2)), view="PA", tilt_deg=0.0)
    out = render.render(p, pose, [], rng)
    for a in ALL:
        mask = out.masks[a]
        h, w = mask.shape
        ys, xs = np.nonzero(mask)
        assert len(xs), a
        b = out.boxes[a]
        assert b.x1 == pytest.approx(xs.min() * pose.width / w) and b.y1 == pytest.approx(ys.min() * pose.height / h)
        assert b.x2 == pytest.approx(min(pose.width, (xs.max() + 1) * pose.width / w))
    img = out.image  # same grid as the masks at this size
    assert img.shape == out.masks[Anatomy.ABDOMEN].shape
    gas = out.structures["gastric"]
    ys, xs = np.nonzero(gas)
    assert xs.mean() > pose.width / 2 and (gas & ~out.masks[Anatomy.LEFT_UPPER_ABDOMEN]).sum() == 0
    ring = binary_dilation(gas, iterations=6) & ~binary_dilation(gas, iterations=2)
    assert img[gas].mean() < img[ring & out.masks[Anatomy.ABDOMEN]].mean() - 0.03
    heart = out.boxes[Anatomy.CARDIAC_SILHOUETTE].center[0]
    assert heart > pose.width / 2 - 0.02 * pose.width


def test_thickness_profile_of_a_disc_rises_from_the_outline_to_the_centre():
    from regionmir.phantom.raster import thickness

    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 100, xx - 100)
    disc = r < 60
    t = thickness(disc, 30.0)
    assert t.shape == disc.shape and t.dtype == np.float32
    assert t[~disc].max() == 0 and 0.9 <= t[100, 100] <= 1.0
    ring = [float(t[(r >= a) & (r < a + 5)].mean()) for a in (50, 40, 30, 20)]  # outline -> centre
    assert all(x < y for x, y in zip(ring, ring[1:])), ring
    assert ring[0] > 0.2  # steep at the outline: a partial-volume edge, not a slow ramp


def _pose_for(seed: int, **changes):
    rng = np.random.default_rng(seed)
    p = patient.sample_patient(rng, 0, "10000003")
    pose = dataclasses.replace(patient.sample_pose(rng, 256, dt.date(2150, 1, 2)), **changes)
    return p, pose, rng


def test_collimated_border_is_light_and_quiet():
    p, pose, rng = _pose_for(6, collimation=(0.12, 0.0, 0.0, 0.0), shutter_black=False, photons=700.0)
    out = render.render(p, pose, [], rng)
    img = out.image  # below 512 pixels the working grid is the output grid
    border = img[: pose.height // 2, 1: int(0.12 * pose.width) - 3]
    lung = img[out.masks[Anatomy.LEFT_MID_LUNG_ZONE]]
    assert border.mean() > 0.85 and border.std() < 0.5 * lung.std()


def test_quantum_noise_falls_as_the_photons_rise():
    # one seed: the same anatomy and noise pattern; the difference to a near noiseless
    # exposure is the quantum noise alone, which should scale as 1 / sqrt(photons)
    p, pose, _ = _pose_for(8, collimation=(0.0, 0.0, 0.0, 0.0), shutter_black=False)
    shot = {q: render.render(p, dataclasses.replace(pose, photons=q), [], np.random.default_rng(1))
            for q in (300.0, 3000.0, 1e8)}
    lung = shot[300.0].masks[Anatomy.RIGHT_LUNG] | shot[300.0].masks[Anatomy.LEFT_LUNG]
    noise = {q: (shot[q].image - shot[1e8].image)[lung].std() for q in (300.0, 3000.0)}
    assert noise[3000.0] > 0.002 and 2.4 < noise[300.0] / noise[3000.0] < 3.6, noise


def test_the_demo_archive_writes_no_box_its_reader_drops(tmp_path):
    """Two films of the demo's archive (seed 0, 120 patients x 2 studies at 512 px) have a
    costophrenic angle cut off by the film's edge to a 1-2 px sliver; every demo run once warned
    "dropped 1 box ... smaller than 2 px" for each. The region is now left out of the scene graph,
    as Chest ImaGenome leaves out what it cannot place."""
    from regionmir.phantom.generate import Task, _dates, _ids, make_image

    subj, sids, dids = _ids(0, 120, 2)
    cut = {"13535484": "right costophrenic angle", "19473224": "left costophrenic angle"}
    for subject, anatomy in cut.items():
        i = subj.index(subject)
        for j, date in enumerate(_dates(0, i, 2)):
            make_image(Task(str(tmp_path), 0, i, j, 512, subject, sids[i][j], dids[i][j], date))
    graphs = [read_scene_graph(p) for p in sorted((tmp_path / "scene_graph").glob("*.json"))]
    assert len(graphs) == 4
    assert all(not sg.dropped for sg in graphs), [sg.dropped for sg in graphs]
    for subject, anatomy in cut.items():  # in one of its two films it is gone
        films = [{r.anatomy.bbox_name for r in sg.regions} for sg in graphs if sg.patient_id == subject]
        assert len(films) == 2 and sum(anatomy not in f for f in films) == 1
    assert sum(len(sg.regions) for sg in graphs) == 4 * 36 - 2
