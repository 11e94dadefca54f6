"""The ingest ledger: durable marks, torn lines, a new collection generation, key holders, shard ledgers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from regionmir.ingest.ledger import Ledger
from regionmir.ingest.stages import ImageTask


def _tasks(*rels: str) -> list[ImageTask]:
    return [ImageTask(Path(rel), rel, Path(rel).stem) for rel in rels]


def test_ledger_survives_a_torn_line_and_a_new_collection(tmp_path):
    path = tmp_path / "l.done"
    a, b, c = _tasks("files/a.dcm", "files/b.dcm", "files/c.dcm")
    ledger = Ledger(path, "token-1")
    ledger.mark([a, b])
    ledger.close()
    with path.open("a") as f:
        f.write("half-writ")  # a kill in the middle of a write
    ledger = Ledger(path, "token-1")
    assert ledger.has(a) and ledger.has(b) and not ledger.has(c) and len(ledger.done) == 2
    assert not ledger.indexed
    ledger.mark_indexed()
    ledger.close()
    ledger = Ledger(path, "token-1")
    assert ledger.indexed
    ledger.mark([c])
    ledger.close()
    ledger = Ledger(path, "token-1")
    assert all(ledger.has(t) for t in (a, b, c)) and not ledger.indexed  # upserted after the index
    ledger.close()
    ledger = Ledger(path, "token-2")
    assert ledger.done == set()  # the collection was re-created: start afresh
    ledger.close()


def test_ledger_marks_are_on_disk_before_mark_returns(tmp_path, monkeypatch):
    """A mark is fsync'd: a power cut after an upsert must not forget that the image is done."""
    import regionmir.ingest.ledger as ledger_module

    synced = []
    real = os.fsync
    monkeypatch.setattr(ledger_module.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    ledger = Ledger(tmp_path / "l.done", "token")
    synced.clear()
    (a,) = _tasks("files/a.dcm")
    assert ledger.claim(a, "key-a", "files/a.dcm") is None
    ledger.mark([a])
    assert synced == [ledger._handle.fileno()]
    ledger.mark_indexed()
    assert len(synced) == 2
    ledger.close()


def test_ledger_keeps_the_first_holder_of_a_key(tmp_path):
    a, b, c, d = _tasks("files/a.dcm", "files/b.dcm", "files/c.dcm", "files/d.dcm")
    ledger = Ledger(tmp_path / "l.done", "token")
    assert ledger.claim(a, "k1", "files/a.dcm") is None and ledger.claim(b, "k2", "files/b.dcm") is None
    assert ledger.claim(c, "k1", "files/c.dcm") == "files/a.dcm"  # within one batch
    assert ledger.claim(a, "k1", "files/a.dcm") is None  # the holder itself, again
    ledger.mark([a, b, c])
    ledger.close()
    again = Ledger(tmp_path / "l.done", "token")
    assert again.claim(d, "k1", "files/d.dcm") == "files/a.dcm"  # from an earlier run
    assert again.claim(d, "k2", "files/d.dcm") == "files/b.dcm"
    assert all(again.has(t) for t in (a, b, c)) and not again.has(d)
    again.close()


def test_shard_ledgers_are_separate_files_read_together(tmp_path, monkeypatch):
    from regionmir.ingest.ledger import ledger_family, ledger_path

    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path))
    p0, p1 = ledger_path("loc", "c", (0, 2)), ledger_path("loc", "c", (1, 2))
    whole = ledger_path("loc", "c")
    assert len({p0, p1, whole}) == 3 and ledger_path("loc", "c", (1, 2)) == p1
    a, b = Ledger(p0, "t"), Ledger(p1, "t")  # two workers of one home, at once
    ta, tb = _tasks(*(f"a{i}.dcm" for i in range(50))), _tasks(*(f"b{i}.dcm" for i in range(50)))
    for x, y in zip(ta, tb):  # interleaved appends
        a.mark([x])
        b.mark([y])
    a.mark_indexed()
    second = subprocess.run(  # a second process on shard 1/2 of the same home
        [sys.executable, "-c", f"from regionmir.ingest.ledger import Ledger; Ledger({str(p1)!r}, 't')"],
        capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "StoreLockedError" in second.stderr
    assert "same --shard" in second.stderr
    b.close()
    with p1.open("a") as f:
        f.write("b-torn")  # shard 1 killed mid-write
    Ledger(ledger_path("loc", "c2", (0, 2)), "t").close()  # another collection
    Ledger(ledger_path("other-store", "c"), "t").close()  # the same name in another store
    family = ledger_family("loc", "c")
    assert family == sorted([p0, p1])
    torn = p1.read_bytes()
    merged = Ledger(whole, "t", others=family)
    assert all(merged.has(t) for t in ta + tb) and len(merged.done) == 100
    assert not merged.indexed  # shard 1 has not built the index since its last upsert
    assert p1.read_bytes() == torn  # another shard's ledger is only read, never cut
    merged.close()
    owner = Ledger(p1, "t")
    assert all(owner.has(t) for t in tb) and len(owner.done) == 50  # its torn line dropped by its owner
    fresh = Ledger(whole, "other-token", others=family)
    assert fresh.done == set()  # the collection was re-created: other generations do not count
    for ledger in (owner, fresh, a):
        ledger.close()


def test_a_damaged_byte_spoils_one_entry_not_the_ledger(tmp_path):
    """A non-UTF-8 byte in the ledger (a bad disk sector, a stray write) once stopped every ingest."""
    a, b = _tasks("files/a.dcm", "files/b.dcm")
    ledger = Ledger(tmp_path / "l.done", "token")
    ledger.mark([a, b])
    ledger.close()
    data = (tmp_path / "l.done").read_bytes()
    cut = data.index(b"\n") + 1  # the first entry, after the token line
    (tmp_path / "l.done").write_bytes(data[:cut] + b"\xff" + data[cut + 1:])
    again = Ledger(tmp_path / "l.done", "token")
    assert [again.has(t) for t in (a, b)] == [False, True]  # a is redone; b stays done
    again.close()


def _stored_images(tmp_path: Path, images: int = 5, regions: int = 6):
    """A store holding ``images`` images of ``regions`` points each, and their ledger (as an ingest leaves them)."""
    import numpy as np

    from regionmir.anatomy import ALL
    from regionmir.store import PointRecord, point_id
    from regionmir.store.embedded import EmbeddedStore

    tasks = _tasks(*(f"files/p1/s{i}/im{i}.dcm" for i in range(images)))
    rng = np.random.default_rng(1)
    with EmbeddedStore(tmp_path / "store") as store:
        store.create_collection("regions", 4, {"model_id": "m" * 16})
        ledger = Ledger(tmp_path / "l.done", "tok")
        for i, task in enumerate(tasks):
            store.upsert("regions", [PointRecord(point_id(f"1.2.{i}", a.slug, "m" * 16),
                                                 rng.normal(size=4).astype(np.float32),
                                                 {"anatomy": a.slug, "image_id": task.image_id}) for a in ALL[:regions]])
            ledger.claim(task, f"1.2.{i}", task.rel, regions, task.image_id)
            ledger.mark([task])
        ledger.close()
    return tasks


def test_reconcile_forgets_exactly_the_images_whose_points_are_gone(tmp_path):
    """Damaged id-tracker files drop points while the ledger lists their images as done."""
    from collections import Counter

    from regionmir.store.embedded import EmbeddedStore

    tasks = _stored_images(tmp_path)
    with EmbeddedStore(tmp_path / "store") as store:
        ledger = Ledger(tmp_path / "l.done", "tok")
        assert ledger.reconcile(store, "regions") is None and len(ledger.done) == 5  # nothing lost
        ledger.close()
    (segment,) = (tmp_path / "store" / "regions" / "shard" / "segments").iterdir()
    with (segment / "mutable_id_tracker.mappings").open("r+b") as f:
        f.truncate(100)
    with EmbeddedStore(tmp_path / "store") as store:
        have = store.count("regions")
        whole = {k for k, n in Counter(p.payload["image_id"] for p in store.points("regions", limit=100)).items()
                 if n == 6}
        ledger = Ledger(tmp_path / "l.done", "tok")
        repair = ledger.reconcile(store, "regions")
        ledger.close()
    assert have < 30 and repair["event"] == "repair" and repair["points_found"] == have
    assert repair["points_expected"] == 30 and repair["images"] == 5 - len(whole)
    assert {t.image_id for t in tasks if ledger.has(t)} == whole


def test_ledger_points_and_older_lines(tmp_path):
    """Lines of older ledgers (no point count) still parse; they count as images without points."""
    from regionmir.ingest.ledger import ledger_points

    path = tmp_path / "l.done"
    path.write_text("tok\nold-entry\nolder\tkey\tfiles/x.dcm\n#indexed\n")
    ledger = Ledger(path, "tok")
    (a,) = _tasks("files/a.dcm")
    ledger.claim(a, "key-a", a.rel, 36, "a-id")
    ledger.mark([a])
    ledger.close()
    assert ledger_points([path], "tok") == (3, 36)
    assert ledger_points([path], "other-token") == (0, 0)
    ledger = Ledger(path, "tok")
    assert len(ledger.done) == 3 and ledger.keys["key"] == ("older", "files/x.dcm")
    ledger.close()
