"""ModelMeta: metadata_props round trip, validation and the content-hash model id."""

import dataclasses

import pytest

from regionmir.anatomy import ALL
from regionmir.errors import ModelError
from regionmir.inference.meta import ModelMeta, model_id_of
from regionmir.regions import CropSpec


def _meta(**kw) -> ModelMeta:
    base = dict(
        model_id="0123456789abcdef", kind="encoder", input_size=64, channels=1, crop_context=0.1,
        norm_mean=0.5, norm_std=0.25, anatomies=tuple(a.slug for a in ALL), embedding_dim=128,
        backbone="resnet10-w16", strategy="regionmir", archive_fingerprint="feedbeef00000000",
    )
    return ModelMeta(**{**base, **kw})


def test_round_trip_through_string_props():
    meta = _meta(crop_context=0.15, norm_mean=0.4321, norm_std=0.1234567)
    props = meta.to_props()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())
    assert ModelMeta.from_props(props) == meta
    assert props["anatomies"].startswith('["right-lung"')


def test_crop_spec_and_anatomies():
    meta = _meta(input_size=48, crop_context=0.2, norm_mean=0.4, norm_std=0.3)
    assert meta.crop_spec() == CropSpec(size=48, context=0.2, mean=0.4, std=0.3)
    assert meta.anatomy_list() == list(ALL)


def test_missing_field_says_how_to_make_a_model():
    props = _meta().to_props()
    del props["embedding_dim"]
    with pytest.raises(ModelError, match="embedding_dim.*regionmir train"):
        ModelMeta.from_props(props, source="x.onnx")


def test_malformed_and_wrong_kind():
    with pytest.raises(ModelError, match="malformed"):
        ModelMeta.from_props({**_meta().to_props(), "input_size": "big"})
    with pytest.raises(ModelError, match="kind 'detector'"):
        ModelMeta.from_props(_meta(kind="detector").to_props())


def test_model_id_is_a_content_hash():
    assert model_id_of(b"graph") == model_id_of(b"graph")
    assert model_id_of(b"graph") != model_id_of(b"graph2")
    assert len(model_id_of(b"x")) == 16
    assert dataclasses.replace(_meta(), created="x").to_props()["created"] == "x"
