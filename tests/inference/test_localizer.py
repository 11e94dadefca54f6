"""Localizer: letterbox geometry and box decoding, no-flip augmentation, training, ONNX parity, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from regionmir.anatomy import BOXED
from regionmir.annotations import Region, SceneGraph
from regionmir.errors import ModelError
from regionmir.inference.localizer import Letterbox, Localizer, letterbox, load_localizer
from regionmir.regions import Box

torch = pytest.importorskip("torch")

from regionmir.cli.app import app  # noqa: E402
from regionmir.train.localizer.augment import AugmentConfig, augment  # noqa: E402
from regionmir.train.localizer.data import make_film  # noqa: E402
from regionmir.train.localizer.run import NORM_MEAN, NORM_STD, LocalizerConfig, fit, write_model  # noqa: E402

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- synthetic films


def synthetic_chest(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, SceneGraph]:
    """A crude frontal chest: dark lungs either side of a bright mediastinum, boxes for all 29.

    The patient's right lung is on the image's left, as on a real PA film.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width * rng.uniform(0.45, 0.55)
    top, bottom = height * rng.uniform(0.1, 0.2), height * rng.uniform(0.75, 0.9)
    half = width * rng.uniform(0.3, 0.4)
    img = np.full((height, width), 0.7, np.float32)
    lungs = {}
    for side, sign in (("right", -1), ("left", 1)):
        x1, x2 = sorted((cx + sign * 0.12 * half * 2, cx + sign * half))
        lungs[side] = Box(x1, top, x2, bottom)
        inside = ((xx - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + ((yy - (top + bottom) / 2) / ((bottom - top) / 2)) ** 2 < 1
        img[inside] = 0.25
    heart = Box(cx - half * 0.35, top + (bottom - top) * 0.55, cx + half * 0.45, bottom - 0.03 * height)
    img[int(heart.y1):int(heart.y2), int(heart.x1):int(heart.x2)] = 0.8
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0, 1), SceneGraph("img", "s1", "p1", "PA", width, height, _regions(lungs, heart, cx))


def _regions(lungs: dict[str, Box], heart: Box, cx: float) -> tuple[Region, ...]:
    """Boxes for the 29 regions derived from the lungs and heart (rough but side-correct)."""
    out = []
    for a in BOXED:
        lung = lungs[a.side] if a.side else None
        if lung is None:
            box = heart if "cardiac" in a.bbox_name or "atrium" in a.bbox_name else \
                Box(cx - 0.05 * heart.width, lungs["right"].y1, cx + 0.05 * heart.width, heart.y2)
        else:
            third = lung.height / 3
            k = 0 if ("upper" in a.bbox_name or "apical" in a.bbox_name or "clavicle" in a.bbox_name) else \
                1 if ("mid" in a.bbox_name or "hilar" in a.bbox_name) else 2
            box = lung if a.bbox_name.endswith(" lung") else Box(lung.x1, lung.y1 + k * third, lung.x2, lung.y1 + (k + 1) * third)
        out.append(Region(a, box))
    return tuple(out)


@pytest.fixture(scope="module")
def films():
    rng = np.random.default_rng(0)
    out = []
    for i in range(24):
        w, h = (int(rng.integers(90, 140)), int(rng.integers(90, 140)))
        px, sg = synthetic_chest(rng, w, h)
        out.append(make_film(f"im{i}", px, sg, SIZE))
    return out


@pytest.fixture(scope="module")
def model_dir(films, tmp_path_factory):
    cfg = LocalizerConfig(size=SIZE, epochs=6, batch_size=8, width=8, device="cpu")
    model = fit(films, cfg)
    model.calibration.copy_(torch.tensor([1.3, 0.2]))  # the export must carry the calibration
    folder = tmp_path_factory.mktemp("loc")
    write_model(model, cfg, "test-fingerprint", folder / "localizer.onnx")
    return folder, model


# ----------------------------------------------------------------------------- geometry


def test_letterbox_decodes_hand_computed_boxes_on_non_square_images():
    wide = Letterbox.of(400, 200, 100)  # scale 0.25: 100 x 50 at top 25
    assert (wide.new_width, wide.new_height, wide.left, wide.top) == (100, 50, 0, 25)
    got = wide.to_original(np.array([[0.1, 0.3, 0.5, 0.7]]))
    np.testing.assert_allclose(got, [[40, 20, 200, 180]])
    tall = Letterbox.of(150, 300, 60)  # scale 0.2: 30 x 60 at left 15
    assert (tall.new_width, tall.new_height, tall.left, tall.top) == (30, 60, 15, 0)
    np.testing.assert_allclose(tall.to_original(np.array([[0.5, 0.5, 0.75, 1.0]])), [[75, 150, 150, 300]])
    # boxes in the padding are clipped to the image; swapped corners are put in order
    np.testing.assert_allclose(wide.to_original(np.array([[0.6, 0.9, 0.2, 0.1]])), [[80, 0, 240, 200]])


def test_letterbox_round_trip_and_canvas():
    image = np.ones((30, 90), np.float32)
    canvas, geo = letterbox(image, 48)
    assert canvas.shape == (48, 48) and geo.top == 16 and geo.new_height == 16
    assert canvas[:16].max() == 0 and canvas[32:].max() == 0 and canvas[16:32].min() == pytest.approx(1)
    boxes = np.array([[3.0, 4.0, 50.0, 29.0]])
    np.testing.assert_allclose(geo.to_original(geo.from_original(boxes)), boxes, atol=1e-9)
    with pytest.raises(ModelError, match="2-D grey image"):
        letterbox(np.zeros((4, 4, 3)), 32)


@pytest.mark.parametrize("shape", [(1, 1), (4000, 1), (1, 4000)])
def test_letterbox_of_a_line_of_pixels_says_too_small(shape):
    """A 1x4000 image is 2-D: once it was told it was not."""
    with pytest.raises(ModelError, match=f"{shape[1]}x{shape[0]} pixels: too small") as caught:
        letterbox(np.zeros(shape, np.float32), 32)
    assert "2-D" not in str(caught.value)


def test_identity_augmentation_matches_inference_letterbox():
    rng = np.random.default_rng(1)
    px, sg = synthetic_chest(rng, 120, 80)
    film = make_film("a", px, sg, 64)
    _, target, ok = augment(film.pixels, film.boxes, 64, AugmentConfig.off(), rng)
    geo = Letterbox.of(film.pixels.shape[1], film.pixels.shape[0], 64)
    assert ok.all()
    np.testing.assert_allclose(target, geo.from_original(film.boxes), atol=0.5 / 64)


def test_augmentation_never_flips_left_and_right():
    rng = np.random.default_rng(2)
    names = [a.bbox_name for a in BOXED]
    pairs = [(i, names.index("left" + n[5:])) for i, n in enumerate(names)
             if n.startswith("right ") and "left" + n[5:] in names]  # right atrium has no partner
    right, left = [p[0] for p in pairs], [p[1] for p in pairs]
    assert len(pairs) == 9
    for _ in range(200):
        px, sg = synthetic_chest(rng, int(rng.integers(80, 160)), int(rng.integers(80, 160)))
        film = make_film("a", px, sg, 64)
        canvas, target, ok = augment(film.pixels, film.boxes, 64, AugmentConfig(), rng)
        centre = (target[:, 0] + target[:, 2]) / 2
        both = ok[right] & ok[left]
        # the patient's right stays on the image's left of the matching left-side structure
        assert (centre[right][both] < centre[left][both]).all()
        assert canvas.shape == (64, 64) and 0 <= canvas.min() and canvas.max() <= 1


def test_augmented_boxes_follow_the_image():
    """A bright square moved by the warp ends up inside its transformed box."""
    rng = np.random.default_rng(3)
    img = np.zeros((100, 140), np.float32)
    img[30:60, 40:80] = 1.0
    box = np.array([[40, 30, 80, 60]], np.float32)
    cfg = AugmentConfig(p_intensity=0, p_blur=0, p_sharpen=0, noise=0, p_collimation=0, p_markers=0)
    for _ in range(30):
        canvas, target, ok = augment(img, box, 64, cfg, rng)
        if not ok[0]:
            continue
        ys, xs = np.nonzero(canvas > 0.5)
        x1, y1, x2, y2 = target[0] * 64
        assert xs.min() >= x1 - 2 and xs.max() <= x2 + 2 and ys.min() >= y1 - 2 and ys.max() <= y2 + 2
        assert (xs.max() - xs.min()) >= 0.7 * (x2 - x1)


# ----------------------------------------------------------------------------- model


def test_onnx_export_matches_torch(model_dir):
    folder, model = model_dir
    loc = Localizer(folder, device="cpu")
    x = np.random.default_rng(4).uniform(0, 1, (3, SIZE, SIZE)).astype(np.float32)
    boxes, conf = loc.predict(x)
    with torch.no_grad():
        # normalised as training normalises, not with the exported values: a mismatch must show
        tb, tc = model(torch.from_numpy((x[:, None] - NORM_MEAN) / NORM_STD))
    np.testing.assert_allclose(boxes, tb.numpy(), atol=1e-4)
    np.testing.assert_allclose(conf, tc.numpy(), atol=1e-4)
    assert loc.meta.kind == "localizer" and loc.meta.input_size == SIZE
    assert (loc.meta.norm_mean, loc.meta.norm_std) == (NORM_MEAN, NORM_STD)
    assert loc.meta.anatomies == tuple(a.slug for a in BOXED)
    assert loc.meta.archive_fingerprint == "test-fingerprint" and len(loc.model_id) == 16


def test_roi_grid_samples_evenly_over_the_widened_box():
    """Sampling a map whose channels are x and y must give the grid centres of the box widened by WIDEN."""
    import torch.nn.functional as F

    from regionmir.train.localizer.model import GRID, N_REGIONS, WIDEN, roi_grid

    s = 32
    ramp = (torch.arange(s, dtype=torch.float32) + 0.5) / s  # pixel centres in [0, 1]
    coords = torch.stack([ramp.expand(s, s), ramp[:, None].expand(s, s)])[None]  # (1, 2, S, S): x, y
    boxes = torch.tensor([0.3, 0.2, 0.5, 0.6]).repeat(1, N_REGIONS, 1)  # (1, 29, 4)
    boxes[0, 5] = torch.tensor([0.6, 0.5, 0.4, 0.7])  # x1 > x2 must sample the same span
    got = F.grid_sample(coords, roi_grid(boxes), align_corners=False).view(1, 2, N_REGIONS, GRID, GRID)
    steps = (torch.arange(GRID) + 0.5) / GRID - 0.5
    x = 0.4 + steps * 0.2 * WIDEN
    y = 0.4 + steps * 0.4 * WIDEN
    torch.testing.assert_close(got[0, 0, 0], x.expand(GRID, GRID), atol=1e-5, rtol=0)  # x varies along columns
    torch.testing.assert_close(got[0, 1, 0], y[:, None].expand(GRID, GRID), atol=1e-5, rtol=0)  # y along rows
    torch.testing.assert_close(got[0, 0, 5], (0.5 + steps * 0.2 * WIDEN).expand(GRID, GRID), atol=1e-5, rtol=0)


def test_refinement_stage_corrects_boxes_and_leaves_the_first_stage_alone(films):
    """Trained alone (first stage frozen at the template), the second stage must move boxes onto the truth."""
    from regionmir.train.localizer.data import template
    from regionmir.train.localizer.model import LocalizerNet, box_iou, localizer_loss

    torch.manual_seed(0)
    model = LocalizerNet(SIZE, torch.from_numpy(template(films, SIZE)), 8).train()
    x, target = _clean_batch(films)
    mask = torch.ones(target.shape[:2], dtype=torch.bool)
    second = [p for n, p in model.named_parameters() if n.startswith(("refine_head", "region_embedding"))]
    opt = torch.optim.Adam(second, lr=3e-3)
    for _ in range(60):
        coarse, boxes, logits = model.stages(x)
        loss, _ = localizer_loss(boxes, model.confidence(logits), target, mask)
        opt.zero_grad()
        loss.backward()
        assert model.box_head.weight.grad is None  # the refined boxes do not pull the first stage
        opt.step()
    with torch.no_grad():
        coarse, boxes, _ = model.eval().stages(x)
    before, after = box_iou(coarse, target)[0].mean().item(), box_iou(boxes, target)[0].mean().item()
    assert after > before + 0.2, (before, after)


def test_no_refine_is_the_one_stage_net(films):
    from regionmir.train.localizer.model import LocalizerNet

    model = LocalizerNet(SIZE, torch.zeros(29, 4), 8, refine=False)
    coarse, boxes, _ = model.stages(torch.zeros(2, 1, SIZE, SIZE))
    assert boxes is coarse and not hasattr(model, "refine_head")


def test_training_learns_beyond_the_template(films):
    from regionmir.train.localizer.model import box_iou

    cfg = LocalizerConfig(size=SIZE, epochs=1, batch_size=8, width=8, device="cpu", augment=AugmentConfig.off(),
                          threads=1)
    before = torch.get_num_threads()
    short = fit(films, cfg)
    assert torch.get_num_threads() == 1  # --threads 1: one core, no OpenMP barrier fights on a busy machine
    torch.set_num_threads(before)
    longer = fit(films, LocalizerConfig(**{**cfg.__dict__, "epochs": 10}))
    x, target = _clean_batch(films)
    ious = []
    for m in (short, longer):
        with torch.no_grad():
            boxes, _ = m(x)
        ious.append(box_iou(boxes, target)[0].mean().item())
    assert ious[1] > ious[0] + 0.02, ious


def test_calibration_matches_mean_confidence_to_mean_iou(model_dir, films):
    """Platt scaling with an intercept makes the mean confidence equal the mean achieved IoU."""
    import copy

    from regionmir.train.localizer.model import box_iou, calibrate

    model = copy.deepcopy(model_dir[1])
    x, target = _clean_batch(films)
    mask = torch.ones(target.shape[:2], dtype=torch.bool)
    a, b = calibrate(model, x, target, mask)
    with torch.no_grad():
        boxes, conf = model(x)
    iou = box_iou(boxes, target)[0]
    assert a > 0 and (a, b) != (1.0, 0.0)
    assert conf.mean().item() == pytest.approx(iou.mean().item(), abs=2e-3)


def _clean_batch(films):
    from regionmir.train.localizer.data import batches

    x, target, _ = next(batches(films, SIZE, len(films), AugmentConfig.off(), np.random.default_rng(0)))
    return (x - 0.5) / 0.25, target


def test_locate_returns_29_regions_in_original_pixels(model_dir):
    folder, _ = model_dir
    loc = load_localizer(folder)
    px, _ = synthetic_chest(np.random.default_rng(5), 150, 100)
    regions = loc.locate(px)
    assert [r.anatomy for r in regions] == list(BOXED)
    for r in regions:
        assert 0 <= r.box.x1 < r.box.x2 <= 150 and 0 <= r.box.y1 < r.box.y2 <= 100
        assert 0.0 <= r.confidence <= 1.0


def test_missing_model_says_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path))
    assert load_localizer() is None
    with pytest.raises(ModelError, match="regionmir train-localizer"):
        Localizer(tmp_path / "nothing")


def test_encoder_file_is_refused_as_localizer(model_dir, tmp_path):
    import onnx

    folder, _ = model_dir
    proto = onnx.load(str(folder / "localizer.onnx"))
    for p in proto.metadata_props:
        if p.key == "kind":
            p.value = "encoder"
    onnx.save(proto, str(tmp_path / "x.onnx"))
    with pytest.raises(ModelError, match="not a localizer"):
        Localizer(tmp_path / "x.onnx")


# ----------------------------------------------------------------------------- CLI


@pytest.fixture()
def png(tmp_path):
    from PIL import Image

    px, _ = synthetic_chest(np.random.default_rng(6), 120, 90)
    path = tmp_path / "chest.png"
    Image.fromarray((px * 255).astype(np.uint8)).save(path)
    return path


def test_cli_localize_json_and_preview(model_dir, png, tmp_path):
    folder, _ = model_dir
    preview = tmp_path / "out.png"
    result = CliRunner().invoke(app, ["localize", str(png), "--model", str(folder), "--json",
                                      "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["width"] == 120 and data["height"] == 90 and len(data["regions"]) == 29
    first = data["regions"][0]
    assert first["anatomy"] == "right-lung" and len(first["box"]) == 4 and 0 <= first["confidence"] <= 1
    from PIL import Image

    with Image.open(preview) as im:
        assert im.size[0] >= 120 and im.mode == "RGB"


def test_cli_localize_without_model_says_train_localizer(png, tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["localize", str(png)])
    assert result.exit_code != 0
    assert "regionmir train-localizer" in str(result.exception) + result.output



def test_cli_train_localizer_on_phantom_archive(tiny_archive, tmp_path):
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train-localizer", str(tiny_archive), "--out", str(out),
                                      "--epochs", "2", "--size", "64", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (out / "localizer.onnx").is_file() and (out / "localizer_report.md").is_file()
    assert report["split"] in ("test", "valid") and report["images"] > 0
    assert set(report["regions"]) == {a.slug for a in BOXED}
    assert 0.0 <= report["iou50"] <= 1.0
    loc = Localizer(out)
    assert loc.meta.archive_fingerprint == report["archive_fingerprint"]
    assert loc.meta.strategy == "box-regression+roi-refine+iou-head"
    one_stage = tmp_path / "one-stage"
    result = CliRunner().invoke(app, ["train-localizer", str(tiny_archive), "--out", str(one_stage),
                                      "--epochs", "1", "--size", "64", "--device", "cpu", "--no-refine", "--json"])
    assert result.exit_code == 0, result.output
    assert Localizer(one_stage).meta.strategy == "box-regression+iou-head"


def test_tiny_localizer_fixture_locates_a_phantom_film(tiny_localizer, tiny_archive):
    from regionmir.archive import Archive
    from regionmir.dicom import read_image

    path, sg = next(Archive(tiny_archive).iter_split("train"))
    regions = load_localizer(tiny_localizer).locate(read_image(path).pixels)
    assert len(regions) == 29
    assert all(0 <= r.box.x2 <= sg.width and 0 <= r.box.y2 <= sg.height for r in regions)


def test_cli_train_localizer_rejects_bad_size(tiny_archive, tmp_path):
    result = CliRunner().invoke(app, ["train-localizer", str(tiny_archive), "--out", str(tmp_path), "--size", "100"])
    assert result.exit_code != 0 and "multiple of 32" in result.output
