"""ModelFolder: a folder, a file in it, or nothing -> the encoder, the localizer beside it, the report."""

from pathlib import Path

import pytest

from regionmir.errors import ModelError
from regionmir.inference import ModelFolder


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_folder_given(tmp_path):
    _touch(tmp_path / "encoder.onnx")
    folder = ModelFolder(tmp_path)
    assert folder.path == tmp_path and folder.named is None
    assert folder.encoder_file == tmp_path / "encoder.onnx"
    assert folder.report == tmp_path / "report.json"
    assert folder.localizer_file is None
    _touch(tmp_path / "localizer.onnx")
    assert folder.localizer_file == tmp_path / "localizer.onnx"


def test_file_given_is_the_encoder_and_the_localizer_sits_beside_it(tmp_path):
    _touch(tmp_path / "best.onnx", tmp_path / "encoder.onnx", tmp_path / "localizer.onnx")
    folder = ModelFolder(tmp_path / "best.onnx")
    assert folder.path == tmp_path and folder.named == tmp_path / "best.onnx"
    assert folder.encoder_file == tmp_path / "best.onnx"  # the file named, not the folder's encoder.onnx
    assert folder.localizer_file == tmp_path / "localizer.onnx"  # beside, not the file named
    assert folder.file("localizer") == tmp_path / "best.onnx"  # `localize --model best.onnx`
    assert folder.report == tmp_path / "report.json"
    _touch(tmp_path / "model.bin")  # an existing file of any name counts as named
    assert ModelFolder(tmp_path / "model.bin").encoder_file == tmp_path / "model.bin"


def test_default_is_the_home_model_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "home"))
    folder = ModelFolder()
    assert folder.path == tmp_path / "home" / "model" and folder.named is None
    assert folder.localizer_file is None
    with pytest.raises(ModelError, match=r"No encoder model at .*home/model/encoder\.onnx\. "
                                         r"Train one with `regionmir train ARCHIVE --out .*home/model`"):
        folder.encoder_file


def test_missing_models_say_how_to_make_them(tmp_path):
    with pytest.raises(ModelError, match=r"No encoder model at .*nowhere/encoder\.onnx.*"
                                         r"regionmir train ARCHIVE --out .*nowhere`"):
        ModelFolder(tmp_path / "nowhere").encoder_file
    with pytest.raises(ModelError, match=r"No encoder model at .*gone\.onnx\. .*--out .*"
                                         + str(tmp_path.name)):
        ModelFolder(tmp_path / "gone.onnx").encoder_file  # a missing .onnx is a file, not a folder
    with pytest.raises(ModelError, match=r"No localizer model at .*localizer\.onnx.*"
                                         r"regionmir train-localizer ARCHIVE --out"):
        ModelFolder(tmp_path).file("localizer")


def test_onnx_files_list_the_encoder_first_then_the_rest_of_a_folder(tmp_path):
    _touch(tmp_path / "encoder.onnx", tmp_path / "localizer.onnx", tmp_path / "b" / "encoder.onnx",
           tmp_path / "a" / "encoder.onnx")
    assert ModelFolder(tmp_path).onnx_files() == [
        tmp_path / "encoder.onnx", tmp_path / "a" / "encoder.onnx", tmp_path / "b" / "encoder.onnx",
        tmp_path / "localizer.onnx"]
    assert ModelFolder(tmp_path / "a" / "encoder.onnx").onnx_files() == [tmp_path / "a" / "encoder.onnx"]
    with pytest.raises(ModelError, match="No encoder model"):
        ModelFolder(tmp_path / "a" / "none").onnx_files()


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """A folder with a tiny untrained encoder.onnx and localizer.onnx."""
    torch = pytest.importorskip("torch")
    from regionmir.anatomy import Anatomy
    from regionmir.inference.meta import ModelMeta
    from regionmir.train.export import export_encoder
    from regionmir.train.localizer.model import LocalizerNet
    from regionmir.train.localizer.run import LocalizerConfig, write_model
    from regionmir.train.models import RegionEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("both")
    meta = ModelMeta(model_id="", kind="encoder", input_size=32, channels=1, crop_context=0.1, norm_mean=0.5,
                     norm_std=0.25, anatomies=(Anatomy.RIGHT_LUNG.slug, Anatomy.LEFT_LUNG.slug),
                     embedding_dim=8, backbone="resnet6-w8", strategy="regionmir", archive_fingerprint="t")
    export_encoder(RegionEncoder("resnet6-w8", embedding_dim=8, classes=2).eval(), folder / "encoder.onnx", meta)
    cfg = LocalizerConfig(size=64, width=8)
    template = torch.tensor([[0.3, 0.3, 0.7, 0.7]] * 29)
    write_model(LocalizerNet(cfg.size, template, width=cfg.width), cfg, "t", folder / "localizer.onnx")
    return folder


def test_load_encoder_and_the_localizer_beside_it(both, tmp_path):
    for given in (both, both / "encoder.onnx"):
        folder = ModelFolder(given)
        enc, loc = folder.load_encoder(device="cpu"), folder.load_localizer(device="cpu")
        assert enc.path == both / "encoder.onnx" and enc.dim == 8
        assert loc is not None and loc.path == both / "localizer.onnx" and loc.meta.kind == "localizer"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "encoder.onnx").write_bytes((both / "encoder.onnx").read_bytes())
    assert ModelFolder(alone).load_localizer() is None
    with pytest.raises(ModelError, match="is a localizer model, not an encoder"):
        ModelFolder(both / "localizer.onnx").load_encoder(device="cpu")
