"""regionmir.anatomy: the 36-region vocabulary, parsing, laterality."""

from __future__ import annotations

import pytest

from regionmir.anatomy import ALL, BOXED, N_BOXED, SLUGS, Anatomy, suggestions
from regionmir.errors import UnknownAnatomyError


def test_36_regions_with_unique_slugs_names_and_indexes():
    assert len(ALL) == 36
    assert len(set(SLUGS)) == 36 and len({a.bbox_name for a in ALL}) == 36
    assert [a.index for a in ALL] == list(range(36))
    for a in ALL:
        assert a.slug == a.bbox_name.replace(" ", "-")
        assert " " not in a.slug and a.slug == a.slug.lower()


def test_known_spellings():
    assert Anatomy.LEFT_LUNG.bbox_name == "left lung"
    assert Anatomy.LEFT_LUNG.slug == "left-lung"
    assert Anatomy.LEFT_LUNG.index == 8
    assert Anatomy.SVC.slug == "svc"
    assert Anatomy.CARDIAC_SILHOUETTE.index == 28


@pytest.mark.parametrize("text", [
    "left lung", "left-lung", "LEFT_LUNG", "Left Lung", "  left   lung ", "left_lung", "LEFT-LUNG",
])
def test_parse_accepts_names_slugs_and_members(text):
    assert Anatomy.parse(text) is Anatomy.LEFT_LUNG


def test_parse_every_spelling_of_every_region():
    for a in ALL:
        assert Anatomy.parse(a.bbox_name) is a
        assert Anatomy.parse(a.slug) is a
        assert Anatomy.parse(a.name) is a
        assert Anatomy.parse(a) is a


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownAnatomyError, match=r"Unknown anatomy 'left lnug'.*Did you mean: left-lung") as info:
        Anatomy.parse("left lnug")
    assert "regionmir anatomies" in str(info.value)
    assert info.value.close[0] == "left-lung"


def test_unknown_name_without_close_match_still_says_what_to_do():
    with pytest.raises(UnknownAnatomyError, match="regionmir anatomies") as info:
        Anatomy.parse("zzzz")
    assert "Did you mean" not in str(info.value)


def test_unknown_anatomy_is_a_value_error():
    with pytest.raises(ValueError):
        Anatomy.parse("elbow")


def test_suggestions_by_part():
    assert "cardiac-silhouette" in suggestions("cardiac")
    assert suggestions("right lung")[0] == "right-lung"


def test_contralateral_pairs():
    assert Anatomy.LEFT_LUNG.contralateral() is Anatomy.RIGHT_LUNG
    assert Anatomy.RIGHT_COSTOPHRENIC_ANGLE.contralateral() is Anatomy.LEFT_COSTOPHRENIC_ANGLE
    assert Anatomy.RIGHT_UPPER_ABDOMEN.contralateral() is Anatomy.LEFT_UPPER_ABDOMEN
    for a in ALL:
        twin = a.contralateral()
        if twin is not None:
            assert twin.contralateral() is a
            assert {a.side, twin.side} == {"left", "right"}
            assert a.bbox_name.split(" ", 1)[1] == twin.bbox_name.split(" ", 1)[1]


def test_contralateral_none_for_midline_and_unpaired():
    assert Anatomy.TRACHEA.contralateral() is None
    assert Anatomy.SPINE.side is None
    assert Anatomy.RIGHT_ATRIUM.side == "right"
    assert Anatomy.RIGHT_ATRIUM.contralateral() is None  # no "left atrium" region
    paired = [a for a in ALL if a.contralateral() is not None]
    assert len(paired) == 24  # 12 left/right pairs


def test_29_boxed_regions_come_first():
    assert N_BOXED == 29 and len(BOXED) == 29
    assert BOXED == ALL[:29]
    assert Anatomy.CARDIAC_SILHOUETTE.boxed and Anatomy.MEDIASTINUM.boxed
    assert not Anatomy.DESCENDING_AORTA.boxed and not Anatomy.LEFT_CARDIAC_SILHOUETTE.boxed
