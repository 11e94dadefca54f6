"""The onnxruntime encoder: same preprocessing as training, batching, providers, actionable errors."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from regionmir.anatomy import Anatomy
from regionmir.annotations import Region, SceneGraph
from regionmir.errors import ModelError
from regionmir.inference.encoder import Encoder, choose_providers, cuda_device_present, load_encoder
from regionmir.inference.meta import ModelMeta
from regionmir.regions import Box, CropSpec
from regionmir.train.data import build_cropset
from regionmir.train.export import export_encoder
from regionmir.train.loop import predict
from regionmir.train.models import RegionEncoder

SPEC = CropSpec(size=32, context=0.12, mean=0.45, std=0.22)
CLASSES = (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG, Anatomy.SPINE)


def _meta(**kw) -> ModelMeta:
    return ModelMeta(
        model_id="", kind="encoder", input_size=SPEC.size, channels=1, crop_context=SPEC.context,
        norm_mean=SPEC.mean, norm_std=SPEC.std, anatomies=tuple(a.slug for a in CLASSES),
        embedding_dim=16, backbone="resnet6-w8", strategy="regionmir", archive_fingerprint="t", **kw,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = RegionEncoder("resnet6-w8", embedding_dim=16, classes=len(CLASSES)).eval()
    folder = tmp_path_factory.mktemp("enc")
    export_encoder(model, folder / "encoder.onnx", _meta())
    return folder, model


def _image_and_boxes():
    rng = np.random.default_rng(3)
    image = rng.random((150, 120), dtype=np.float32)
    boxes = [Box(5, 10, 60, 140), Box(60.5, 8.2, 118.7, 139), Box(-10, 100, 30, 170)]  # last one overhangs
    return image, boxes


def test_preprocessing_equals_training_path(model_dir):
    folder, model = model_dir
    enc = Encoder(folder)
    image, boxes = _image_and_boxes()
    sg = SceneGraph("i", "s", "p", "PA", 120, 150, tuple(Region(a, b) for a, b in zip(CLASSES, boxes)))
    held_out = build_cropset([(image, sg)], CLASSES, enc.spec, jitter_views=0, dtype=np.float32)
    np.testing.assert_array_equal(enc.crops(image, boxes), held_out.clean)
    emb, logits = enc.embed_regions(image, boxes)
    t_emb, t_logits = predict(model, held_out.clean, SPEC.mean, SPEC.std, torch.device("cpu"))
    np.testing.assert_allclose(emb, t_emb, atol=1e-4)
    np.testing.assert_allclose(logits, t_logits, atol=1e-4)
    train_set = build_cropset([(image, sg)], CLASSES, enc.spec, jitter_views=2)  # float16 cache
    np.testing.assert_allclose(train_set.clean, held_out.clean, atol=5e-4)


def test_spec_comes_from_metadata_and_embeddings_are_unit(model_dir):
    enc = Encoder(model_dir[0] / "encoder.onnx")
    assert enc.spec == SPEC and enc.dim == 16 and enc.anatomies == list(CLASSES)
    emb, logits = enc.embed(np.random.default_rng(0).random((130, 32, 32), dtype=np.float32), batch_size=64)
    assert emb.shape == (130, 16) and logits.shape == (130, 3)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    small, _ = enc.embed(np.random.default_rng(0).random((130, 32, 32), dtype=np.float32), batch_size=7)
    np.testing.assert_allclose(small, emb, atol=1e-5)
    assert enc.predict_anatomy(logits[:2])[0] in CLASSES


def test_empty_and_wrong_shaped_crops(model_dir):
    enc = Encoder(model_dir[0])
    emb, logits = enc.embed(np.zeros((0, 32, 32), np.float32))
    assert emb.shape == (0, 16) and logits.shape == (0, 3)
    assert enc.embed_regions(np.zeros((50, 50), np.float32), [])[0].shape == (0, 16)
    with pytest.raises(ModelError, match=r"shape \(N, 32, 32\).*crop_region"):
        enc.embed(np.zeros((2, 64, 64), np.float32))


def test_missing_model_says_to_train(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="No encoder model.*regionmir train ARCHIVE --out"):
        Encoder(tmp_path / "nowhere")
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelError, match=r"home/model/encoder\.onnx.*regionmir train"):
        load_encoder()


def test_model_without_metadata_or_of_another_kind(model_dir, tmp_path):
    proto = onnx.load(str(model_dir[0] / "encoder.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelError, match="lacks RegionMIR metadata"):
        Encoder(tmp_path / "bare.onnx")
    for key, value in dataclasses.replace(_meta(), kind="localizer").to_props().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp_path / "loc.onnx"))
    with pytest.raises(ModelError, match="localizer model, not an encoder"):
        Encoder(tmp_path / "loc.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="Cannot load encoder"):
        Encoder(tmp_path / "junk.onnx")


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA GPU")
def test_cpu_machine_gets_cpu_quietly(model_dir, capfd):
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    enc = Encoder(model_dir[0], device="auto")
    enc.embed(np.zeros((2, 32, 32), np.float32))
    assert enc.providers == ["CPUExecutionProvider"]
    assert capfd.readouterr().err == ""
    with pytest.raises(ModelError, match="no usable CUDA GPU"):
        Encoder(model_dir[0], device="cuda")
    with pytest.raises(ModelError, match="Unknown device 'tpu'"):
        choose_providers("tpu")


def test_tiny_model_fixture_on_the_phantom(tiny_model, tiny_archive):
    from regionmir.archive import Archive
    from regionmir.dicom import read_image

    enc = Encoder(tiny_model)
    assert enc.meta.strategy == "regionmir" and len(enc.anatomies) == 36
    path, sg = next(Archive(tiny_archive).iter_split("test"))
    emb, logits = enc.embed_regions(read_image(path).pixels, [r.box for r in sg.regions])
    assert emb.shape == (len(sg.regions), enc.dim) and logits.shape == (len(sg.regions), 36)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
