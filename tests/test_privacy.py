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
    ("A12stuff/A12.dcm", ("A12",), "*/*.dcm"),  # ... inside a folder name too (the probe's export)
    ("CHEST_A12B/chest.dcm", ("A12",), "*/chest.dcm"),  # three characters: anywhere
    ("scans/7/x.dcm", ("7",), "scans/*/x.dcm"),  # a one-digit id as a whole word
    ("scans/IM7/x.dcm", ("7",), "scans/IM7/x.dcm"),  # ... only: it would mask everything
    ("Lee_Li/x.dcm", ("Q9", "Zhou^Li"), "*/x.dcm"),  # a two-letter name part as a whole word
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


@pytest.mark.parametrize("layout", ["PAT9876_chest", "chest-PAT9876", "xPAT9876x", "pat_9876"])
def test_a_patient_id_inside_a_longer_folder_name_is_masked(layout):
    """Not only a folder named exactly by the id: hospital exports add words and separators."""
    assert privacy.mask_path(f"scans/{layout}/x.dcm", "PAT9876") == "scans/*/x.dcm"


def test_image_ids_naming_the_patient_are_salted_hashes(monkeypatch):
    """A file named by its PatientID keeps no trace of it; other names stay as they are."""
    monkeypatch.setenv("REGIONMIR_SALT", "salt one")
    shown = privacy.shown_image_id("12345678", "12345678", "SMITH^JOHN", "19500304")
    assert re.fullmatch(r"img-[0-9a-f]{20}", shown)
    assert privacy.shown_image_id("12345678", "12345678") == shown  # stable: search finds it again
    assert privacy.shown_image_id("A12", "A12").startswith("img-")
    assert privacy.shown_image_id("IM000001", "12345678", "SMITH^JOHN", "19500304") == "IM000001"
    assert privacy.shown_image_id("1.2.840.10008.1234", "1234") == "1.2.840.10008.1234"  # a UID
    monkeypatch.setenv("REGIONMIR_SALT", "salt two")
    assert privacy.shown_image_id("12345678", "12345678") != shown


def test_hash_paths_hides_every_name(monkeypatch):
    monkeypatch.setenv("REGIONMIR_SALT", "salt one")
    assert privacy.shown_image_id("IM000001", hash_all=True).startswith("img-")
    path = privacy.shown_path("files/p10/p10000032/s5/x.dcm", hash_all=True)
    assert re.fullmatch(r"path-[0-9a-f]{20}", path)
    assert path != privacy.shown_path("files/p10/p10000032/s5/y.dcm", hash_all=True)
    assert privacy.shown_path("files/p10/p10000032/s5/x.dcm") == "files/p10/*/s5/x.dcm"
