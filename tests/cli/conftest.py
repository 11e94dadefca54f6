"""The `world` every catalogue module starts from: a model folder and a home with an archive ingested."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.catalogue import cli, patient_values

from regionmir.archive import Archive


@pytest.fixture(scope="module")
def world(tiny_archive, tiny_model, tiny_localizer, tmp_path_factory):
    """A model folder (encoder + localizer), a home with ``tiny_archive`` ingested, and the archive."""
    root = tmp_path_factory.mktemp("catalogue")
    model = root / "model"
    shutil.copytree(tiny_model, model)
    shutil.copy(Path(tiny_localizer) / "localizer.onnx", model / "localizer.onnx")
    w = SimpleNamespace(root=root, model=model, archive=tiny_archive, home=root / "home",
                        secrets=patient_values(tiny_archive))
    done = cli(w, "ingest", str(tiny_archive), "--model", str(model), "--workers", "0", "--json")
    assert done.returncode == 0, done.stderr
    w.image = Archive(tiny_archive).dicom_paths()[0]
    return w
