"""A home with the tiny archive ingested, the in-process answers, and a real `regionmir serve` on it."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from helpers.catalogue import cli, ingested_world
from serve_helpers import CASES, start_server, stop_server


@pytest.fixture(scope="module")
def world(tiny_archive, tiny_model, tiny_localizer, tmp_path_factory):
    """A model folder (encoder + localizer), a home with ``tiny_archive`` ingested, and its first film."""
    w = ingested_world(tmp_path_factory.mktemp("serve"), tiny_archive, tiny_model, tiny_localizer)
    shutil.copytree(w.model, w.home / "model")  # the server and `search` find it without --model
    w.copy = w.root / "home-copy"  # for a second server (with a token): the first one holds the store
    shutil.copytree(w.home, w.copy)
    return w


@pytest.fixture(scope="module")
def reference(world):
    """The in-process `--json` answer of each of CASES for ``world.image`` (before any server runs)."""
    docs = {}
    for name, options in CASES.items():
        done = cli(world, "search", *options, "--no-server", "--json", str(world.image))
        assert done.returncode == 0, done.stderr
        docs[name] = json.loads(done.stdout)
        assert docs[name].get("results") or docs[name].get("studies"), name  # something to compare
    return docs


@pytest.fixture(scope="module")
def server(world, reference):
    """A running server on ``world.home`` (1 MB upload cap); yields its URL, stops it after."""
    proc, url = start_server(world.home, world.root / "server-tmp", "--max-upload-mb", "1")
    yield SimpleNamespace(url=url, proc=proc, tmp=world.root / "server-tmp")
    err = stop_server(proc)
    assert not (world.home / "serve.json").exists(), "the discovery file outlived the server"
    assert "Traceback" not in err, err
