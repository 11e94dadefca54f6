"""Ingest sources: shards, planning against the ledger, one Source protocol for the folder archive and the PACS."""

from __future__ import annotations

import shutil

import pytest

from regionmir.archive import Archive
from regionmir.ingest.ledger import Ledger
from regionmir.ingest.sources import plan, shard_of


def test_shards_partition_the_archive(tiny_archive):
    archive = Archive(tiny_archive)
    everything, _ = plan(archive)
    parts = [plan(archive, (i, 3))[0] for i in range(3)]
    ids = [t.image_id for part in parts for t in part]
    assert sorted(ids) == sorted(t.image_id for t in everything)
    assert len(set(ids)) == len(ids)
    assert all(shard_of(t.image_id, 3) == i for i, part in enumerate(parts) for t in part)


def test_plan_skips_images_the_ledger_has(tiny_archive, tmp_path):
    archive = Archive(tiny_archive)
    everything, _ = plan(archive)
    ledger = Ledger(tmp_path / "l.done", "token")
    ledger.mark(everything[:2])
    todo, skipped = plan(archive, ledger=ledger)
    assert skipped == 2 and len(todo) == len(everything) - 2
    assert {t.image_id for t in everything[:2]}.isdisjoint(t.image_id for t in todo)
    assert all(ledger.has(t) for t in everything[:2]) and not any(ledger.has(t) for t in todo)
    ledger.close()


def test_every_source_implements_the_source_protocol(tiny_archive, tmp_path):
    """The runner has one path: the folder archive and both PACS sources answer the same verbs."""
    import inspect

    from regionmir.ingest.sources import ArchiveSource, Source
    from regionmir.pacs.source import DicomWebSource, SpoolSource

    verbs = {"plan", "feed", "release", "close"}
    assert verbs <= {n for n, _ in inspect.getmembers(Source, inspect.isfunction)}
    for cls in (ArchiveSource, SpoolSource, DicomWebSource):
        for verb in verbs:
            mine, contract = inspect.signature(getattr(cls, verb)), inspect.signature(getattr(Source, verb))
            assert list(mine.parameters) == list(contract.parameters), (cls.__name__, verb)
    source = ArchiveSource(Archive(tiny_archive))
    ledger = Ledger(tmp_path / "l.done", "token")
    tasks, skipped = source.plan((0, 1), ledger)
    assert skipped == 0 and tasks and source.annotations == source.archive_root == Archive(tiny_archive).root
    assert list(source.feed(tasks, on_skip=None)) == tasks
    ledger.close()


@pytest.mark.parametrize(("text", "expected"), [("0/1", (0, 1)), (" 2/3 ", (2, 3))])
def test_one_shard_parser_for_the_cli_and_the_worker(text, expected):
    from regionmir.ingest.sources import parse_shard

    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1/0", "a/b", "1", "1/2/3", "", "0.5/2"])
def test_shard_parser_names_the_option_it_refuses(text):
    from regionmir.ingest.sources import parse_shard

    with pytest.raises(ValueError, match=r"--shard must be i/n with 0 <= i < n"):
        parse_shard(text)
    with pytest.raises(ValueError, match=r"^SHARD must be"):
        parse_shard(text, "SHARD")


def test_a_file_linked_from_outside_the_archive_is_planned_by_its_place_in_it(tiny_archive, tmp_path):
    """A symlinked .dcm whose target lies elsewhere once aborted the plan with a traceback naming the
    target's patient folder; it is an image of the archive, named by the link's path."""
    archive = tmp_path / "archive"
    shutil.copytree(tiny_archive, archive)
    outside = Archive(tiny_archive).dicom_paths()[0]
    link = archive / "files" / "p19" / "p19999999" / "s59999999" / "linked.dcm"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    tasks, _ = plan(Archive(archive))
    (linked,) = [t for t in tasks if t.image_id == "linked"]
    assert linked.rel == "files/p19/p19999999/s59999999/linked.dcm"
    assert len(tasks) == len(Archive(tiny_archive).dicom_paths()) + 1
