"""Training for transfer to real films: domain randomization, real crops for pretraining, real
lung boxes for the localizer."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.real_films import write_film_folder

torch = pytest.importorskip("torch")

from regionmir.anatomy import BOXED, Anatomy  # noqa: E402
from regionmir.train.augment import DomainConfig, _equalize, augment, domain  # noqa: E402


def _crops(b=16, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, s, s, generator=g) * 0.2
    x[:, :, :, : s // 2] += 0.6  # bright image-left half: a flip would move it
    return x


def test_domain_changes_the_look_but_not_where_things_are():
    torch.manual_seed(0)
    x = _crops()
    y = domain(x, DomainConfig(p=1.0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.allclose(x, y)
    left, right = y[..., :16].mean(dim=(1, 2, 3)), y[..., 16:].mean(dim=(1, 2, 3))
    assert bool((left > right).all()), "the bright half must stay on the image left (no flips)"


def test_domain_probability_zero_is_the_identity():
    x = _crops()
    assert torch.equal(domain(x, DomainConfig(p=0.0)), x)


def test_equalize_spreads_values_uniformly_and_keeps_order():
    x = torch.rand(2, 1, 32, 32) ** 3  # skewed toward dark
    e = _equalize(x).reshape(2, -1)
    assert float(e.max()) == 1.0 and abs(float(e.mean()) - 0.5) < 0.06  # was about 0.25
    xf = x.reshape(2, -1)
    for i in range(2):  # monotone: a brighter pixel never ends darker
        order = xf[i].argsort()
        assert bool((e[i][order].diff() >= 0).all())


def test_augment_with_and_without_domain():
    torch.manual_seed(1)
    x = _crops()
    a = augment(x)
    b = augment(x, dom=DomainConfig(p=1.0))
    assert a.shape == b.shape == x.shape and not torch.allclose(a, b)


def _real_folder(tmp_path, n=3):
    m = np.zeros((96, 112), bool)
    m[10:86, 8:50] = m[14:80, 62:104] = True
    img = np.where(m, 60, 160).astype(np.uint8)
    return write_film_folder(tmp_path, [
        (f"r{i}", img, m, {"right_lung": "", "left_lung": "", "view": "PA", "finding": "x", "group": f"g{i}",
                           "split": "train" if i < n - 1 else "test"})
        for i in range(n)
    ])


def test_real_crops_are_train_split_lungs_without_labels(tmp_path):
    from regionmir.regions import CropSpec
    from regionmir.train.realcrops import real_cropset

    crops = real_cropset(_real_folder(tmp_path), (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG), CropSpec(size=24), views=1)
    assert crops.views.shape == (4, 2, 24, 24)  # 2 train films x 2 lungs, the test film never read
    assert set(crops.labels.tolist()) == {0}
    assert {i for i in crops.image_ids} == {"r0", "r1"}


def test_real_localizer_films_carry_lung_boxes_only(tmp_path):
    from regionmir.train.localizer.real import real_films, truth_only

    films = real_films(_real_folder(tmp_path), size=64)
    assert len(films) == 2 and truth_only(films)
    heart = BOXED.index(Anatomy.CARDIAC_SILHOUETTE)
    assert not any(f.present[heart] for f in films)  # no heart truth in this folder: none invented
    i = BOXED.index(Anatomy.RIGHT_LUNG)
    x1, y1, x2, y2 = films[0].boxes[i]
    assert x2 < films[0].pixels.shape[1] / 2  # the patient's right lung on the image left


def _heart_folder(tmp_path):
    """Like :func:`_real_folder`, with a heart box (x 40-80) in films.csv, as Wingspan's films have."""
    m = np.zeros((96, 112), bool)
    m[10:86, 8:50] = m[14:80, 62:104] = True
    img = np.where(m, 60, 160).astype(np.uint8)
    img[50:80, 40:80] = 230
    return write_film_folder(tmp_path, [
        (f"h{i}", img, m, {"right_lung": "", "left_lung": "", "heart": "40 50 80 80", "view": "frontal",
                           "finding": "", "group": f"g{i}", "split": "train" if i < 2 else "test", "source": "wingspan"})
        for i in range(3)
    ])


def test_real_localizer_films_carry_the_true_heart_box(tmp_path):
    from regionmir.train.localizer.real import real_films, truth_only

    films = real_films(_heart_folder(tmp_path), size=64)
    heart = BOXED.index(Anatomy.CARDIAC_SILHOUETTE)
    assert len(films) == 2 and truth_only(films) and all(f.present[heart] for f in films)
    assert int(films[0].present.sum()) == 3  # two lungs and the heart, nothing invented
    np.testing.assert_allclose(films[0].boxes[heart], [40, 50, 80, 80])  # 112 px film: not downsampled at size 64


def test_labeled_real_crops_include_the_true_heart(tmp_path):
    from regionmir.regions import CropSpec
    from regionmir.train.realcrops import real_cropset

    classes = (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG, Anatomy.CARDIAC_SILHOUETTE)
    crops = real_cropset(_heart_folder(tmp_path), classes, CropSpec(size=24), views=1, labeled=True)
    assert sorted(crops.labels.tolist()) == [0, 0, 1, 1, 2, 2]  # per train film: both lungs and the heart
    hearts = crops.views[crops.labels == 2, 0]
    assert float(hearts.mean()) > float(crops.views[crops.labels == 0, 0].mean())  # the bright heart, not a lung


def test_localizer_training_with_real_hearts_reports_them(tmp_path, tiny_archive):
    from regionmir.train.localizer.run import LocalizerConfig, train_localizer

    cfg = LocalizerConfig(size=64, epochs=1, batch_size=8, width=8, device="cpu", real=str(_heart_folder(tmp_path / "r")))
    report = train_localizer(tiny_archive, tmp_path / "m", cfg)
    assert report["real_train_images"] == 2 and report["real_train_hearts"] == 2  # the test film never read


def test_training_with_real_crops_reports_them(tmp_path, tiny_archive):
    from regionmir.train import TrainConfig, run

    cfg = TrainConfig(strategy="regionmir", epochs=1, pretrain_epochs=1, batch_size=64, crop_size=32,
                      backbone="resnet6-w8", embedding_dim=16, device="cpu", seed=0, real=str(_real_folder(tmp_path / "r")))
    report = run(tiny_archive, tmp_path / "m", cfg)
    assert report["real_pretrain_crops"] == 4
    assert (tmp_path / "m" / "encoder.onnx").is_file()
    with pytest.raises(Exception, match="ntxent"):
        run(tiny_archive, tmp_path / "m2", TrainConfig(**{**cfg.__dict__, "contrastive": "supcon"}))


def test_labeled_real_crops_are_named_by_their_boxes(tmp_path):
    from regionmir.regions import CropSpec
    from regionmir.train.realcrops import real_cropset

    classes = (Anatomy.LEFT_LUNG, Anatomy.RIGHT_LUNG)
    crops = real_cropset(_real_folder(tmp_path), classes, CropSpec(size=24), views=1, labeled=True)
    assert sorted(crops.labels.tolist()) == [0, 0, 1, 1]  # one left and one right lung per train film
    right = crops.views[crops.labels == 1, 0]  # the patient's right lung: the image-left blob, kept there
    left = crops.views[crops.labels == 0, 0]
    assert right.shape == left.shape == (2, 24, 24)
    assert not np.allclose(right, left)


def test_real_labels_join_fine_tuning(tmp_path, tiny_archive, monkeypatch):
    from regionmir.errors import ModelError
    from regionmir.train import TrainConfig, pipeline, run

    seen = {}
    real_train = pipeline.train_strategy

    def spy(name, crops, cfg, device, progress, checkpoint=None, pretrain=None):
        seen["fine"], seen["pretrain"] = len(crops), len(pretrain)
        return real_train(name, crops, cfg, device, progress, checkpoint, pretrain)

    monkeypatch.setattr(pipeline, "train_strategy", spy)
    cfg = TrainConfig(strategy="regionmir", epochs=1, pretrain_epochs=1, batch_size=64, crop_size=32,
                      backbone="resnet6-w8", embedding_dim=16, device="cpu", seed=0,
                      real=str(_real_folder(tmp_path / "r")), real_labels=True)
    report = run(tiny_archive, tmp_path / "m", cfg)
    assert report["real_labeled_crops"] == 4
    assert seen["fine"] == seen["pretrain"] == report["train_crops"] + 4
    with pytest.raises(ModelError, match="--real FOLDER"):
        run(tiny_archive, tmp_path / "m2", TrainConfig(**{**cfg.__dict__, "real": ""}))


def test_a_folder_of_unlabeled_films_trains_through_the_localizer(tmp_path, monkeypatch):
    """A hospital's own films (no films.csv, no truth): every readable film, boxes from the
    localizer, named by them; a broken file is skipped, and without a localizer it says what to do."""
    from PIL import Image

    import regionmir.inference.localizer
    from regionmir.annotations import Region
    from regionmir.errors import AnnotationError
    from regionmir.regions import Box, CropSpec
    from regionmir.train.realcrops import real_cropset

    folder = tmp_path / "hospital"
    (folder / "2024").mkdir(parents=True)
    for i in range(3):
        img = np.full((96, 112), 160, np.uint8)
        img[10:86, 8:50] = 60  # image left: the patient's right lung
        Image.fromarray(img).save(folder / "2024" / f"film{i}.png")
    (folder / "2024" / "broken.dcm").write_bytes(b"not a film")
    (folder / "notes.txt").write_text("not a film either")

    classes = (Anatomy.LEFT_LUNG, Anatomy.RIGHT_LUNG)
    with pytest.raises(AnnotationError, match="--real-localizer"):
        real_cropset(folder, classes, CropSpec(size=24), views=1)

    class FakeLocalizer:
        def __init__(self, path):
            assert str(path) == "loc.onnx"

        def locate(self, image):
            return [Region(Anatomy.RIGHT_LUNG, Box(8, 10, 50, 86)), Region(Anatomy.LEFT_LUNG, Box(62, 14, 104, 80))]

    monkeypatch.setattr(regionmir.inference.localizer, "Localizer", FakeLocalizer)
    crops = real_cropset(folder, classes, CropSpec(size=24), "loc.onnx", views=1, labeled=True)
    assert sorted(crops.image_ids) == ["film0", "film0", "film1", "film1", "film2", "film2"]
    assert sorted(crops.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    right = crops.views[crops.labels == 1, 0]  # the dark box, where the localizer put the right lung
    assert float(right.mean()) < float(crops.views[crops.labels == 0, 0].mean())
