"""The package faces: what `regionmir` and each stage package promise to export, and what they load."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

FACES = ["regionmir", "regionmir.inference", "regionmir.ingest", "regionmir.search", "regionmir.store",
         "regionmir.evaluation", "regionmir.evaluation.real", "regionmir.doctor", "regionmir.pacs",
         "regionmir.phantom", "regionmir.train", "regionmir.train.localizer"]


@pytest.mark.parametrize("name", FACES)
def test_every_face_exports_what_it_lists(name):
    module = importlib.import_module(name)
    assert module.__all__, f"{name} has no explicit face"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not have: {missing}"


def test_the_import_paths_users_rely_on():
    import regionmir
    from regionmir.ingest import IngestConfig, run_ingest
    from regionmir.ingest.runner import run_ingest as defined
    from regionmir.search import Searcher, search_image
    from regionmir.search.searcher import search_image as searched

    assert run_ingest is defined and regionmir.run_ingest is run_ingest and regionmir.IngestConfig is IngestConfig
    assert search_image is searched and regionmir.search_image is search_image and regionmir.Searcher is Searcher
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        regionmir.nothing_here  # noqa: B018


def test_importing_regionmir_loads_no_stage_and_no_runtime():
    """`import regionmir` (every command's first step) stays light: the stages load on first use."""
    code = ("import sys, regionmir, regionmir.anatomy, regionmir.errors\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', 'qdrant_edge')"
            " or m.startswith(('regionmir.ingest', 'regionmir.search', 'regionmir.store', 'regionmir.inference'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
