"""The --where language: keyword matches, numeric ranges on ctr, and the errors a person can act on."""

from __future__ import annotations

import pytest

from regionmir.search.where import (
    RANGE_KEYS,
    WhereError,
    describe_condition,
    parse_where,
)
from regionmir.store import Range


def test_keyword_conditions_group_repeated_keys():
    assert parse_where(["view=PA", "findings=nodule", "view=AP"]) == {"view": ["PA", "AP"], "findings": "nodule"}
    assert parse_where(["findings=a>b"]) == {"findings": "a>b"}  # the key ends at the first operator


@pytest.mark.parametrize(("item", "want"), [
    ("ctr>0.5", Range(gt=0.5)),
    ("ctr>=0.5", Range(gte=0.5)),
    ("ctr<0.45", Range(lt=0.45)),
    ("ctr<=.6", Range(lte=0.6)),
    (" ctr > 0.5 ", Range(gt=0.5)),
    ("ctr=0.512", Range(gte=0.512, lte=0.512)),
    ("ctr>-1e-3", Range(gt=-0.001)),
])
def test_comparisons_on_ctr_are_ranges(item, want):
    assert parse_where([item]) == {"ctr": want}


def test_bounds_on_one_key_all_hold_and_combine_with_keywords():
    got = parse_where(["ctr>0.45", "view=PA", "ctr<=0.6", "ctr>=0.4", "view=AP"])
    assert got == {"view": ["PA", "AP"], "ctr": Range(gt=0.45, lte=0.6)}  # the tighter lower bound
    assert parse_where(["ctr>=0.5", "ctr>0.5"]) == {"ctr": Range(gt=0.5)}  # at a tie the strict one
    assert parse_where(["ctr<0.5", "ctr<=0.5"]) == {"ctr": Range(lt=0.5)}
    assert parse_where(["ctr<=0.7", "ctr<0.8"]) == {"ctr": Range(lte=0.7)}
    assert describe_condition("ctr", got["ctr"]) == "ctr>0.45 ctr<=0.6"
    assert describe_condition("view", got["view"]) == "view=PA, AP"


def test_range_reference_semantics():
    r = Range(gt=0.45, lte=0.6)
    assert [r.holds(v) for v in (0.45, 0.46, 0.6, 0.61, None, "0.5", True)] == [False, True, True, False,
                                                                                 False, False, False]
    assert Range().holds(0.3) and not Range().holds(None)


@pytest.mark.parametrize(("item", "message"), [
    ("ctr>abc", "'abc' is not a number"),
    ("ctr>nan", "'nan' is not a number"),
    ("ctr<inf", "'inf' is not a number"),
    ("ctr=>0.5", "'>0.5' is not a number"),
    ("ctr", "--where 'ctr>0.5'"),  # `--where ctr>0.5` unquoted: the shell took '>0.5' as a redirection
    ("ctr>", "key=value"),
    (">0.5", "key=value"),
    ("view", "key=value"),
    ("view>PA", "only numeric fields (ctr) take <, <=, >, >=; view takes view=VALUE"),
    ("findings<=3", "only numeric fields (ctr)"),
    ("colour=red", ("not searchable; use one of: view, modality, findings, study_id, patient, box_source, "
                    "image_id, ctr")),
])
def test_bad_conditions_say_what_to_write(item, message):
    with pytest.raises(WhereError, match="^--where ") as caught:
        parse_where([item])
    assert message in str(caught.value)


def test_only_the_float_indexed_fields_take_ranges():
    from regionmir.store import PAYLOAD_INDEXES

    assert RANGE_KEYS == ("ctr",) and PAYLOAD_INDEXES["ctr"] == "float"


# ----------------------------------------------------------------------------- check_where on real stores


@pytest.fixture(params=["embedded", "qdrant-local"])
def store(request, tmp_path):
    from regionmir.store.embedded import EmbeddedStore
    from regionmir.store.server import ServerStore

    s = EmbeddedStore(tmp_path / "store") if request.param == "embedded" else ServerStore(location=":memory:")
    yield s
    s.close()


def _fill(store, name: str, ctrs: list[float | None]) -> None:
    import numpy as np

    from regionmir.store import PointRecord, point_id

    store.create_collection(name, 4, {"model_id": "m"})
    store.upsert(name, [PointRecord(point_id(str(i), "left-lung", "m"), np.eye(4, dtype=np.float32)[i % 4] + 0.1,
                                    {"anatomy": "left-lung", "view": "PA", **({} if c is None else {"ctr": c})})
                        for i, c in enumerate(ctrs)])


def test_check_where_passes_ranges_that_match_and_names_what_to_do_when_none_does(store):
    from regionmir.errors import RegionMIRError
    from regionmir.search.where import check_where

    _fill(store, "old", [None, None, None])  # filled before the ingest stored ctr
    _fill(store, "new", [0.41, 0.52, None])
    check_where(store, "new", parse_where(["ctr>0.5", "view=PA"]))
    check_where(store, "new", parse_where(["ctr>=0.41", "ctr<0.42"]))
    with pytest.raises(RegionMIRError, match=r"--where ctr>0.5 matches no region of collection 'old'; it holds no "
                                             r"ctr values: .* Ingest the archive again into a new collection "
                                             r"\(`regionmir ingest ARCHIVE --collection NEW`\)"):
        check_where(store, "old", parse_where(["ctr>0.5"]))
    with pytest.raises(RegionMIRError, match=r"--where ctr>0.6 matches no region of collection 'new'; ctr values "
                                             r"there: 0.41 to 0.52\.$"):
        check_where(store, "new", parse_where(["ctr>0.6"]))
    with pytest.raises(RegionMIRError, match="ctr>0.5 ctr<0.45 matches no region"):  # both bounds hold: none does
        check_where(store, "new", parse_where(["ctr>0.5", "ctr<0.45"]))


def test_value_range_is_the_smallest_and_largest_stored_number(store):
    _fill(store, "new", [0.52, None, 0.41, 0.47])
    _fill(store, "old", [None, None])
    assert store.value_range("new", "ctr") == (0.41, 0.52)
    assert store.value_range("old", "ctr") is None
