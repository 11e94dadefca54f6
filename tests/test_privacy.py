"""regionmir.privacy: salted patient pseudonyms."""

from __future__ import annotations

import re
import stat

import pytest

from regionmir import privacy
from regionmir.archive import resolve_path
from regionmir.errors import RegionMIRError
from regionmir.privacy import pseudonym, salt


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGIONMIR_SALT", raising=False)
    return tmp_path / "home"


def test_salt_file_created_private_under_home(home):
    key = salt()
    path = home / "salt"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(rb"[0-9a-f]{64}", key)
    assert salt() == key  # read back, not made anew
    assert [p.name for p in home.iterdir()] == ["salt"]  # no temporary files left


def test_two_installations_get_different_salts(tmp_path, monkeypatch):
    monkeypatch.delenv("REGIONMIR_SALT", raising=False)
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "a"))
    a = salt()
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path / "b"))
    assert salt() != a


def test_existing_salt_is_never_replaced(home, tmp_path):
    path = tmp_path / "elsewhere" / "salt"
    privacy._create_salt(path)
    first = path.read_text()
    privacy._create_salt(path)  # a second process racing the first
    assert path.read_text() == first
    assert [p.name for p in path.parent.iterdir()] == ["salt"]


def test_salt_from_environment(home, monkeypatch):
    monkeypatch.setenv("REGIONMIR_SALT", "a shared secret")
    assert salt() == b"a shared secret"
    assert not (home / "salt").exists()


def test_empty_salt_file_is_an_error(home):
    home.mkdir()
    (home / "salt").write_text("\n")
    with pytest.raises(RegionMIRError, match="salt file .* is empty"):
        salt()


def test_pseudonym_format_and_stability(home):
    p = pseudonym("10000032")
    assert re.fullmatch(r"pt-[0-9a-f]{16}", p)
    assert pseudonym("10000032") == p
    assert pseudonym(" 10000032 ") == p  # header padding does not change the patient
    assert pseudonym(10000032) == p
    assert pseudonym("10000033") != p


def test_pseudonym_depends_on_salt(home, monkeypatch):
    with_file = pseudonym("10000032")
    assert pseudonym("10000032", key=b"salt one") != pseudonym("10000032", key=b"salt two")
    assert pseudonym("10000032", key=b"salt one") == pseudonym("10000032", key=b"salt one")
    monkeypatch.setenv("REGIONMIR_SALT", "salt one")
    assert pseudonym("10000032") == pseudonym("10000032", key=b"salt one") != with_file


@pytest.mark.parametrize("raw", ["10000032", "pt-0123456789abcdef", "MRN-4711-X", "x"])
def test_pseudonym_never_shows_the_raw_id(home, raw):
    p = pseudonym(raw)
    assert p != raw and raw not in p[3:]


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_no_id_no_pseudonym(home, raw):
    assert pseudonym(raw) is None
    assert not (home / "salt").exists()  # nothing to hash, no salt needed


def test_mask_path_hides_patient_folders(tmp_path):
    rel = "files/p10/p10000032/s50414267/abc.dcm"
    assert privacy.mask_path(rel) == "files/p10/*/s50414267/abc.dcm"
    assert privacy.mask_path("scans/PAT9876/x.dcm", "PAT9876") == "scans/*/x.dcm"
    target = tmp_path / rel
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert resolve_path(tmp_path, privacy.mask_path(rel)) == target
    assert resolve_path(tmp_path, "files/p10/*/s1/none.dcm") is None


@pytest.mark.parametrize(("rel", "patient", "shown"), [
    ("files/p10/p10000032/s50414267/abc.dcm", (), "files/p10/*/s50414267/abc.dcm"),  # MIMIC, no header
    ("scans/PAT9876_chest/x.dcm", ("PAT9876",), "scans/*/x.dcm"),  # an id inside a folder name
    ("DOE^JOHN_19450101/img1.dcm", ("X1", "DOE^JOHN", "19450101"), "*/img1.dcm"),
    ("Smith John 1950-03-04/12345678.dcm", ("12345678", "Smith^John", "19500304"), "*/*.dcm"),
    ("archive/04.03.1950/x.dcm", ("Q7", None, "19500304"), "archive/*/x.dcm"),  # a day-first date
    ("A12/chest.dcm", ("A12",), "*/chest.dcm"),  # a short id as a whole word
    ("CHEST_A12B/chest.dcm", ("A12",), "CHEST_A12B/chest.dcm"),  # ... not inside another word
    ("doe/x.dcm", ("1", "Doe^J^^^", ""), "*/x.dcm"),
    ("studies/1.2.826.0.1.3680043.8.498.1234/series/1.2.3.4/instances/1.2.840.10008.1234",
     ("1234", "Doe^J", "19450101"), "studies/1.2.826.0.1.3680043.8.498.1234/series/1.2.3.4/instances/1.2.840.10008.1234"),
])
def test_mask_path_hides_every_part_naming_the_patient_in_any_layout(rel, patient, shown):
    assert privacy.mask_path(rel, *patient) == shown


@pytest.mark.parametrize(("url", "shown"), [
    ("http://admin:hunter2@127.0.0.1:6333", "http://***@127.0.0.1:6333"),
    ("https://token@qdrant.example:6333/", "https://***@qdrant.example:6333/"),
    ("http://pacs/dicom-web?access_token=s3cr3t&limit=5#x", "http://pacs/dicom-web?access_token=***&limit=***#x"),
    ("http://localhost:6333", "http://localhost:6333"),
])
def test_urls_are_shown_without_credentials(url, shown):
    assert privacy.redact_url(url) == shown
    assert privacy.redact_urls(f"cannot reach {url}: refused") == f"cannot reach {shown}: refused"
