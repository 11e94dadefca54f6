"""The on-disk crop cache and resumable training: same crops as in memory, resume after a kill, still learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.train_archive import write_png_archive

from regionmir.archive import Archive
from regionmir.regions import CropSpec
from regionmir.train.cache import cut_split
from regionmir.train.checkpoint import Checkpoint
from regionmir.train.data import build_cropset, present_classes, read_pixels
from regionmir.train.loop import TrainConfig, train_strategy
from regionmir.train.pipeline import evaluate_rows
from regionmir.train.progress import Progress
from regionmir.train.splits import scan_split

SPEC = CropSpec(size=32, context=0.1)
CFG = TrainConfig(epochs=3, pretrain_epochs=0, batch_size=64, crop_size=32, backbone="resnet6-w8",
                  embedding_dim=16, jitter_views=1, lr=1e-2, loader_workers=0, threads=1)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = write_png_archive(tmp_path_factory.mktemp("cache") / "archive", images=20, size=96)
    archive = Archive(root)
    pairs = list(archive.iter_split("train"))
    return scan_split(archive, "train"), pairs, present_classes(sg for _, sg in pairs)


def test_cache_holds_exactly_the_in_memory_crops(split, tmp_path):
    scan, pairs, classes = split
    disk = cut_split(scan, classes, SPEC, tmp_path, "train", jitter_views=2, seed=3)
    mem = build_cropset(read_pixels(pairs), classes, SPEC, jitter_views=2, seed=3)
    assert disk.shape == mem.views.shape and disk.dtype == np.float16
    np.testing.assert_array_equal(disk.labels, mem.labels)
    assert disk.image_ids == mem.image_ids and disk.classes == mem.classes
    assert [disk.image_id(i) for i in range(len(disk))] == mem.image_ids
    assert json.loads((tmp_path / "train.films.json").read_text()) == [sg.image_id for _, sg in pairs]  # one id a film
    starts = np.load(tmp_path / "train.starts.npy")
    assert starts[0] == 0 and starts[-1] == len(mem) and len(starts) == len(pairs) + 1
    idx = np.array([7, 0, len(mem) - 1, 7])  # any order, repeats: rows come back as asked
    np.testing.assert_array_equal(disk.rows(idx), mem.views[idx])
    np.testing.assert_array_equal(disk.clean_rows(5, 9), mem.clean[5:9])
    np.testing.assert_array_equal(np.load(tmp_path / "train.npy"), mem.views)  # a plain .npy file


def test_a_stopped_cut_resumes_where_it_stopped(split, tmp_path, monkeypatch):
    scan, pairs, classes = split
    monkeypatch.setattr("regionmir.train.cache.FLUSH_EVERY", 4)
    reads = []

    def dying_read(path):
        if len(reads) == 9:
            raise KeyboardInterrupt  # killed while decoding the 10th image
        reads.append(path)
        return next(read_pixels([(path, pairs[0][1])]))[0]

    with pytest.raises(KeyboardInterrupt):
        cut_split(scan, classes, SPEC, tmp_path, "train", read=dying_read)
    assert json.loads((tmp_path / "train.json").read_text())["images_done"] == 8
    reads.clear()
    again = cut_split(scan, classes, SPEC, tmp_path, "train", read=lambda p: reads.append(p) or
                      next(read_pixels([(p, pairs[0][1])]))[0])
    assert reads == [p for p, _ in pairs[8:]]  # only the images not recorded as done
    fresh = cut_split(scan, classes, SPEC, tmp_path / "fresh", "train")
    np.testing.assert_array_equal(again.rows(np.arange(len(again))), fresh.rows(np.arange(len(fresh))))
    recut = cut_split(scan, classes, CropSpec(size=24), tmp_path, "train")  # other settings: cut again
    assert recut.shape[-1] == 24


def test_a_version_1_cache_is_cut_again_and_says_why(split, tmp_path):
    scan, pairs, classes = split
    cut_split(scan, classes, SPEC, tmp_path, "train", jitter_views=1)
    manifest = json.loads((tmp_path / "train.json").read_text())
    manifest["key"]["version"] = 1  # what RegionMIR wrote before the per-film ids
    (tmp_path / "train.json").write_text(json.dumps(manifest))
    (tmp_path / "train.ids.json").write_text(json.dumps(["x"] * manifest["crops"]))
    notes, reads = [], []
    again = cut_split(scan, classes, SPEC, tmp_path, "train", jitter_views=1, note=notes.append,
                      read=lambda p: reads.append(p) or next(read_pixels([(p, pairs[0][1])]))[0])
    assert len(reads) == len(pairs)  # every image cut again
    assert len(notes) == 1 and "older RegionMIR (crop cache version 1, now 2)" in notes[0]
    assert notes[0].endswith("cutting it again")
    assert not (tmp_path / "train.ids.json").exists()
    assert json.loads((tmp_path / "train.json").read_text())["key"]["version"] == 2
    assert again.image_ids == [sg.image_id for _, sg in pairs for r in sg.regions if r.anatomy in classes]


BASE = {"seed": 3, "jitter": 0.08, "jitter_views": 1, "dtype": np.float16}


@pytest.mark.parametrize("change", [{"seed": 4}, {"jitter": 0.2}, {"jitter_views": 2}, {"dtype": np.float32},
                                    {"spec": CropSpec(size=32, context=0.3)}], ids=lambda c: next(iter(c)))
def test_a_cache_cut_for_other_crops_is_never_served(split, tmp_path, change):
    """The cache key stands for the crops: a run whose crops differ (another seed draws other
    jitter boxes) must get its own crops, never the ones cut for an earlier run in the folder."""
    scan, pairs, classes = split
    settings = {**BASE, **change}
    spec = settings.pop("spec", SPEC)
    first = build_cropset(read_pixels(pairs), classes, SPEC, **BASE)
    want = build_cropset(read_pixels(pairs), classes, spec, **settings)
    assert first.views.shape != want.views.shape or (first.views != want.views).any()  # the crops differ
    cut_split(scan, classes, SPEC, tmp_path, "train", **BASE)
    reads = []

    def read(path):
        reads.append(path)
        return next(read_pixels([(path, None)]))[0]

    got = cut_split(scan, classes, spec, tmp_path, "train", read=read, **settings)
    assert len(reads) == len(pairs)  # a miss: every image cut again
    assert got.shape == want.views.shape and got.dtype == want.views.dtype
    np.testing.assert_array_equal(got.rows(np.arange(len(got))), want.views)
    reads.clear()
    again = cut_split(scan, classes, spec, tmp_path, "train", read=read, **settings)
    assert reads == []  # the same settings again: a hit, nothing cut
    np.testing.assert_array_equal(again.rows(np.arange(len(again))), want.views)


class _Epochs(Progress):
    """Records the epochs that ran."""

    def __init__(self):
        self.epochs = set()

    def step(self, epoch, loss, rate):
        self.epochs.add(epoch)


class _StopAfter(Progress):
    """Raises KeyboardInterrupt when training reaches epoch ``stop`` (a kill mid-run)."""

    def __init__(self, stop: int):
        self.stop = stop

    def step(self, epoch, loss, rate):
        if epoch == self.stop:
            raise KeyboardInterrupt


def _weights(model) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in model.state_dict().values()]


def test_training_resumes_from_its_checkpoint_and_learns(split, tmp_path):
    scan, pairs, classes = split
    crops = cut_split(scan, classes, CFG.crop_spec(), tmp_path / "cache", "train", jitter_views=1)
    cpu = torch.device("cpu")
    whole, hist = train_strategy("scratch", crops, CFG, cpu, Progress(), Checkpoint(tmp_path / "a.pt", {"k": 1}))
    ckpt = Checkpoint(tmp_path / "b.pt", {"k": 1})
    with pytest.raises(KeyboardInterrupt):
        train_strategy("scratch", crops, CFG, cpu, _StopAfter(3), ckpt)
    assert torch.load(ckpt.path, weights_only=True)["epoch"] == 2
    seen = _Epochs()
    resumed, hist2 = train_strategy("scratch", crops, CFG, cpu, seen, ckpt)
    assert seen.epochs == {3}  # epochs 1-2 came from the checkpoint
    assert hist2 == hist  # and epoch 3 is what the uninterrupted run computed
    for a, b in zip(_weights(whole), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert Checkpoint(ckpt.path, {"k": 2}).load(cpu) is None  # other settings: not resumed
    accuracy = evaluate_rows(resumed, crops, 0.5, 0.25, cpu, chunk=50)["accuracy"]
    assert accuracy > 5 / len(classes)  # chance is 1/36


def test_cli_trains_from_the_cache_folder_and_reuses_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    archive = write_png_archive(tmp_path / "archive", images=10, size=96)
    cli = Path(sys.executable).parent / "regionmir"
    cmd = [str(cli), "train", str(archive), "--out", str(tmp_path / "model"), "--cache", str(tmp_path / "cache"),
           "--json", "--epochs", "1", "--pretrain-epochs", "1", "--crop-size", "32", "--backbone", "resnet6-w8",
           "--batch-size", "64", "--embedding-dim", "16", "--threads", "1"]
    first = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout)
    assert first["crop_cache"] == str(tmp_path / "cache")
    assert {p.name for p in (tmp_path / "cache").iterdir()} >= {"train.npy", "train.json", "test.npy", "test.json"}
    assert json.loads((tmp_path / "cache" / "train.json").read_text())["images_done"] == first["train_images"]
    assert (tmp_path / "model" / "encoder.onnx").is_file()
    assert not list((tmp_path / "model" / "checkpoints").glob("*.pt"))  # removed once exported
    stamp = (tmp_path / "cache" / "train.npy").stat().st_mtime_ns
    second = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout)
    assert (tmp_path / "cache" / "train.npy").stat().st_mtime_ns == stamp  # not cut again
    assert second["results"]["regionmir"]["accuracy"] == first["results"]["regionmir"]["accuracy"]
