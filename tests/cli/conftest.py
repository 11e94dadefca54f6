"""The `world` every catalogue module starts from: a model folder and a home with an archive ingested."""

from __future__ import annotations

import pytest
from helpers.catalogue import ingested_world


@pytest.fixture(scope="module")
def world(tiny_archive, tiny_model, tiny_localizer, tmp_path_factory):
    """A model folder (encoder + localizer), a home with ``tiny_archive`` ingested, and the archive."""
    return ingested_world(tmp_path_factory.mktemp("catalogue"), tiny_archive, tiny_model, tiny_localizer)
