"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

# The server of the integration tests: docker-compose.yml's pin (tests/test_deploy.py checks),
# within one minor version of qdrant-client 1.20.
QDRANT_IMAGE = "qdrant/qdrant:v1.19.1"


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory):
    """A phantom archive: 6 patients x 2 studies at size 256 (seed 0). Returns its root Path."""
    from regionmir.phantom import generate_archive

    root = tmp_path_factory.mktemp("phantom") / "archive"
    generate_archive(root, seed=0, patients=6, studies_per_patient=2, size=256, workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_localizer(tiny_archive, tmp_path_factory):
    """A localizer trained for seconds on ``tiny_archive`` (64 px, 3 epochs): its model folder.

    Boxes are rough; use it for plumbing (shapes, metadata, CLI), not for accuracy.
    """
    pytest.importorskip("torch")
    from regionmir.train.localizer.run import LocalizerConfig, train_localizer

    out = tmp_path_factory.mktemp("localizer")
    train_localizer(tiny_archive, out, LocalizerConfig(size=64, epochs=3, batch_size=8, width=8, device="cpu"))
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_archive, tmp_path_factory):
    """An encoder trained for seconds on ``tiny_archive`` (regionmir strategy, 32 px crops,
    resnet6-w8, D=32) and exported: its model folder (encoder.onnx, report.md, report.json).

    Load it with ``regionmir.inference.encoder.Encoder(tiny_model)``. Use it for plumbing, not accuracy.
    """
    pytest.importorskip("torch")
    from regionmir.train import TrainConfig, run

    out = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(strategy="regionmir", epochs=2, pretrain_epochs=1, batch_size=64, crop_size=32,
                      backbone="resnet6-w8", embedding_dim=32, device="cpu", seed=0)
    run(tiny_archive, out, cfg)
    return out


def _qdrant_container(api_key: str | None = None):
    """A QdrantContainer of QDRANT_IMAGE, not yet started; skips without a Docker engine."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # no docker package, no socket, engine down
        pytest.skip(f"needs a reachable Docker engine to start {QDRANT_IMAGE}: {exc}")
    from testcontainers.community.qdrant import QdrantContainer

    return QdrantContainer(image=QDRANT_IMAGE, api_key=api_key)


@pytest.fixture(scope="session")
def qdrant_server_url():
    """URL of a Qdrant server in Docker, for the whole session; skips without a Docker engine."""
    with _qdrant_container() as container:
        yield f"http://{container.rest_host_address}"


@pytest.fixture(scope="session")
def qdrant_server_with_key():
    """``(URL, API key)`` of a second Qdrant server in Docker that refuses requests without that
    key, as a secured deployment does; skips without a Docker engine."""
    key = "integration-key"
    with _qdrant_container(api_key=key) as container:
        yield f"http://{container.rest_host_address}", key


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core box threads only contend
    (test modules that train or run tiny torch nets use it: ``pytestmark``)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
