"""Deployment files: compose structure (single server and 3-node cluster), worker image and entry point.

No Docker engine is needed: the compose files are parsed with pyyaml and merged the way
`docker compose -f docker-compose.yml -f deploy/docker-compose.cluster.yml` merges them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import typer.main
import yaml
from helpers.fake_qdrant import FakeQdrant

from regionmir.store.probe import NotReady, Probe

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "docker-compose.yml"
CLUSTER = ROOT / "deploy" / "docker-compose.cluster.yml"
DOCKERFILE = ROOT / "ingest" / "Dockerfile"
PINNED = re.compile(r"^qdrant/qdrant:v\d+\.\d+\.\d+$")
WORKER_ENV = ("ARCHIVE", "QDRANT_URL", "QDRANT_API_KEY", "REGIONMIR_MODEL", "COLLECTION", "SHARD",
              "WORKERS", "REGIONMIR_SALT")


def _load_worker():
    spec = importlib.util.spec_from_file_location("regionmir_ingest_worker", ROOT / "ingest" / "worker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


# ------------------------------------------------------------------ compose, parsed and merged


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _parts(mount: str) -> list[str]:
    """``source:target[:mode]``, where the source may be an interpolation like ``${A:-./a}``."""
    found = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+))?", mount)
    assert found, f"unparsable mount {mount!r}"
    return [g for g in found.groups() if g is not None]


def _target(mount: str) -> str:
    return _parts(mount)[1]


def _source(mount: str) -> str:
    return _parts(mount)[0]


def merge_service(base: dict, over: dict) -> dict:
    """Compose's override rules for the keys used here: maps merge, volumes merge by target,
    command/image/scalars are replaced."""
    out = dict(base)
    for key, value in over.items():
        if key == "environment":
            out[key] = {**base.get(key, {}), **value}
        elif key == "volumes":
            mounts = {_target(m): m for m in base.get(key, [])}
            mounts.update({_target(m): m for m in value})
            out[key] = list(mounts.values())
        elif key in ("ports", "depends_on") and key in base:
            out[key] = list(dict.fromkeys([*base[key], *value]))
        else:
            out[key] = value
    return out


def merged(base: dict, over: dict) -> dict:
    services = dict(base["services"])
    for name, svc in over["services"].items():
        services[name] = merge_service(services.get(name, {}), svc)
    return {"services": services, "volumes": {**base.get("volumes", {}), **over.get("volumes", {})}}


@pytest.fixture(scope="module")
def base() -> dict:
    return load(BASE)


@pytest.fixture(scope="module")
def cluster(base) -> dict:
    return merged(base, load(CLUSTER))


def qdrant_nodes(project: dict) -> dict[str, dict]:
    return {n: s for n, s in project["services"].items() if str(s.get("image", "")).startswith("qdrant/")}


def workers(project: dict) -> dict[str, dict]:
    return {n: s for n, s in project["services"].items() if s.get("build", {}).get("dockerfile") == "ingest/Dockerfile"}


def names_of(svc_name: str, svc: dict) -> set[str]:
    """The host names other containers reach a service by: its name and network aliases."""
    aliases = (svc.get("networks") or {}).get("default", {}) or {}
    return {svc_name, *aliases.get("aliases", [])}


def test_services_present(base, cluster):
    assert set(base["services"]) == {"qdrant", "ingest", "orthanc"}
    assert set(qdrant_nodes(cluster)) == {"qdrant", "qdrant-1", "qdrant-2"}
    assert set(workers(cluster)) == {"ingest", "ingest-1", "ingest-2"}


def test_orthanc_serves_dicomweb_with_a_password_from_the_environment(base):
    orthanc = base["services"]["orthanc"]
    assert re.fullmatch(r"jodogne/orthanc-plugins:\d+\.\d+\.\d+", orthanc["image"])  # pinned
    assert orthanc["profiles"] == ["pacs"] and "8042:8042" in orthanc["ports"]
    mount = next(m for m in orthanc["volumes"] if _target(m) == "/etc/orthanc/regionmir.json")
    config = json.loads((ROOT / _source(mount).removeprefix("./")).read_text())
    assert orthanc["command"] == "/etc/orthanc/regionmir.json"
    assert config["DicomWeb"]["Enable"] and config["DicomWeb"]["Root"] == "/dicom-web/"
    assert config["AuthenticationEnabled"] and set(config["RegisteredUsers"].values()) == {"${ORTHANC_PASSWORD}"}
    assert "ORTHANC_PASSWORD" in orthanc["environment"]


def test_qdrant_image_pinned_once_everywhere(base, cluster):
    images = {s["image"] for s in qdrant_nodes(cluster).values()}
    assert len(images) == 1, f"nodes run different Qdrant versions: {images}"
    (image,) = images
    assert PINNED.match(image) and "latest" not in image
    assert base["services"]["qdrant"]["image"] == image
    store_tests = ROOT / "tests" / "conftest.py"
    if store_tests.exists():  # the testcontainers integration tests must run the same server
        found = re.search(r'QDRANT_IMAGE\s*=\s*"([^"]+)"', store_tests.read_text())
        assert found and found.group(1) == image
    for svc in workers(cluster).values():
        assert not svc["image"].endswith(":latest") and ":" in svc["image"]


def test_storage_is_in_named_volumes_unique_per_node(base, cluster):
    for project in (base, cluster):
        seen = set()
        for name, svc in qdrant_nodes(project).items():
            mounts = {_target(m): _source(m) for m in svc["volumes"]}
            volume = mounts.get("/qdrant/storage")
            assert volume in project["volumes"], f"{name}: storage is not a named volume"
            assert volume not in seen, f"{name} shares storage volume {volume}"
            seen.add(volume)
            assert mounts.get("/qdrant/snapshots") in project["volumes"]


def test_ports_api_key_and_no_public_p2p(base, cluster):
    assert {"6333:6333", "6334:6334"} <= set(base["services"]["qdrant"]["ports"])
    for project in (base, cluster):
        for name, svc in qdrant_nodes(project).items():
            assert "QDRANT_API_KEY" in svc["environment"]["QDRANT__SERVICE__API_KEY"]
            assert not any("6335" in p for p in svc.get("ports", [])), f"{name} publishes p2p"
    assert "ports" not in cluster["services"]["qdrant-1"] and "ports" not in cluster["services"]["qdrant-2"]


def test_cluster_bootstrap_is_consistent(cluster):
    nodes = qdrant_nodes(cluster)
    first, joiners = [], []
    for name, svc in nodes.items():
        env = svc["environment"]
        assert env["QDRANT__CLUSTER__ENABLED"] == "true" and env["QDRANT__CLUSTER__P2P__PORT"] == "6335"
        args = svc["command"] if isinstance(svc["command"], list) else shlex.split(svc["command"])
        flags = dict(zip(args[1::2], args[2::2]))
        uri_host = re.match(r"http://([^:]+):6335$", flags["--uri"]).group(1)
        assert uri_host in names_of(name, svc), f"{name} announces {uri_host}, which is not its name"
        (joiners if "--bootstrap" in flags else first).append((name, flags))
    assert len(first) == 1, "exactly one node starts the cluster with --uri alone"
    assert len(joiners) == len(nodes) - 1
    for name, flags in joiners:
        assert flags["--bootstrap"] == first[0][1]["--uri"], f"{name} bootstraps from elsewhere"
    replication = int(nodes["qdrant"]["environment"]["QDRANT__STORAGE__COLLECTION__REPLICATION_FACTOR"])
    assert 1 < replication <= len(nodes)


def test_workers_are_configured_by_environment(base, cluster):
    home = re.search(r"REGIONMIR_HOME=(\S+)", DOCKERFILE.read_text()).group(1)
    for project in (base, cluster):
        nodes = qdrant_nodes(project)
        for name, svc in workers(project).items():
            env = svc["environment"]
            assert set(WORKER_ENV) <= set(env), f"{name} lacks {set(WORKER_ENV) - set(env)}"
            host, port = re.match(r"http://([^:/]+):(\d+)$", env["QDRANT_URL"]).groups()
            assert port == "6333" and any(host in names_of(n, s) for n, s in nodes.items())
            mounts = {_target(m): m for m in svc["volumes"]}
            assert _parts(mounts[env["ARCHIVE"]])[2:] == ["ro"] and _parts(mounts[env["REGIONMIR_MODEL"]])[2:] == ["ro"]
            assert _source(mounts[home]) in project["volumes"], f"{name}: state is not persistent"
            assert svc["init"] is True and svc["restart"] == "no"


def test_cluster_workers_cover_every_shard_once(cluster):
    ws = workers(cluster)
    shards = sorted(worker.parse_shard(s["environment"]["SHARD"]) for s in ws.values())
    assert shards == [(i, len(ws)) for i in range(len(ws))]
    states = [{_target(m): _source(m) for m in s["volumes"]}["/state"] for s in ws.values()]
    assert len(set(states)) == len(ws), "workers share a ledger volume"
    for s in ws.values():
        assert int(s["environment"]["QDRANT_EXPECT_PEERS"]) == len(qdrant_nodes(cluster))


def test_cluster_workers_create_the_collection_sharded_and_replicated(base, cluster):
    nodes = qdrant_nodes(cluster)
    server = nodes["qdrant"]["environment"]
    for name, svc in workers(cluster).items():
        # compose's ${VAR:-default} / ${VAR:?message} as plain values, then the worker's parser
        env = {k: re.sub(r"\$\{\w+:[-?]([^}]*)\}", r"\1", str(v)) for k, v in svc["environment"].items()}
        cfg = worker.read_env({**env, "ARCHIVE": str(ROOT), "REGIONMIR_MODEL": str(ROOT), "REGIONMIR_SALT": "s"})
        assert cfg.shards == len(nodes), f"{name}: one shard per node"
        assert 1 < cfg.replication_factor <= len(nodes), f"{name}: a node may fail"
        assert 1 <= cfg.write_consistency <= cfg.replication_factor
        argv = worker.ingest_argv(cfg)
        for flag, value in (("--shards", cfg.shards), ("--replication-factor", cfg.replication_factor),
                            ("--write-consistency", cfg.write_consistency)):
            assert argv[argv.index(flag) + 1] == str(value)
        # the server defaults (for collections made by other clients) say the same
        assert int(server["QDRANT__STORAGE__COLLECTION__REPLICATION_FACTOR"]) == cfg.replication_factor
        assert int(server["QDRANT__STORAGE__COLLECTION__WRITE_CONSISTENCY_FACTOR"]) == cfg.write_consistency
        assert int(server["QDRANT__STORAGE__COLLECTION__SHARD_NUMBER_PER_NODE"]) * len(nodes) == cfg.shards
    for svc in workers(base).values():  # one server: its defaults, no replicas to ask for
        assert not {"QDRANT_SHARDS", "QDRANT_REPLICATION_FACTOR"} & set(svc["environment"])


# ----------------------------------------------------------------------------- worker image


def dockerfile() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_dockerfile_slim_python_no_train_extra_non_root():
    lines = dockerfile()
    assert lines[0] == "FROM python:3.11-slim"
    installs = [ln for ln in lines if "pip install" in ln]
    assert installs and not any("train" in ln or "torch" in ln for ln in installs)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [ln for ln in lines if ln.startswith("HEALTHCHECK")] in ([], ["HEALTHCHECK NONE"])
    entry = next(ln for ln in lines if ln.startswith("ENTRYPOINT"))
    assert "/app/worker.py" in entry
    assert "COPY ingest/worker.py /app/worker.py" in lines
    for ln in lines:
        if ln.startswith("COPY") and "--from" not in ln:
            for src in ln.split()[1:-1]:
                assert (ROOT / src).exists(), f"COPY source {src} missing"


# ---------------------------------------------------------------------------- worker logic


@pytest.fixture
def env(tmp_path) -> dict:
    (tmp_path / "archive").mkdir()
    (tmp_path / "model").mkdir()
    return {"ARCHIVE": str(tmp_path / "archive"), "REGIONMIR_MODEL": str(tmp_path / "model"),
            "QDRANT_URL": "http://qdrant:6333", "QDRANT_API_KEY": "k", "REGIONMIR_SALT": "s" * 64,
            "SHARD": "1/3", "WORKERS": "4", "COLLECTION": "cxr"}


def test_read_env(env):
    cfg = worker.read_env(env)
    assert (cfg.shard, cfg.workers, cfg.collection, cfg.wait_s, cfg.expect_peers) == ((1, 3), 4, "cxr", 120.0, 0)
    assert cfg.qdrant_url == "http://qdrant:6333" and cfg.api_key == "k"
    assert (cfg.shards, cfg.replication_factor, cfg.write_consistency) == (None, None, None)
    assert "--shards" not in worker.ingest_argv(cfg)
    cfg = worker.read_env({**env, "QDRANT_SHARDS": "6", "QDRANT_REPLICATION_FACTOR": "3",
                           "QDRANT_WRITE_CONSISTENCY": ""})
    assert (cfg.shards, cfg.replication_factor, cfg.write_consistency) == (6, 3, None)


@pytest.mark.parametrize("change,code,message", [
    ({"SHARD": "3/3"}, 64, "SHARD must be"),
    ({"REGIONMIR_SALT": ""}, 64, "REGIONMIR_SALT is not set"),
    ({"WORKERS": "many"}, 64, "WORKERS must be a number"),
    ({"BATCH_SIZE": "0"}, 64, "BATCH_SIZE must be >= 1"),
    ({"QDRANT_SHARDS": "0"}, 64, "QDRANT_SHARDS must be >= 1"),
    ({"QDRANT_REPLICATION_FACTOR": "two"}, 64, "QDRANT_REPLICATION_FACTOR must be a number"),
    ({"QDRANT_URL": "", "QDRANT_SHARDS": "3"}, 64, "QDRANT_SHARDS need a Qdrant server"),
    ({"ARCHIVE": "/nonexistent/archive"}, 66, "ARCHIVE /nonexistent/archive is not a folder"),
    ({"REGIONMIR_MODEL": "/nonexistent/model"}, 66, "REGIONMIR_MODEL"),
])
def test_read_env_refuses(env, change, code, message):
    with pytest.raises(worker.WorkerError, match=message) as info:
        worker.read_env({**env, **change})
    assert info.value.code == code


def test_ingest_argv_is_accepted_by_the_real_cli(env):
    cfg = worker.read_env({**env, "BATCH_SIZE": "32", "QDRANT_SHARDS": "3", "QDRANT_REPLICATION_FACTOR": "2",
                           "QDRANT_WRITE_CONSISTENCY": "1"})
    argv = worker.ingest_argv(cfg)
    assert argv[:3] == ["regionmir", "--verbose", "ingest"] and "k" not in argv  # key stays in env
    from regionmir.cli.app import app

    group = typer.main.get_command(app)
    assert "--verbose" in {o for p in group.params for o in p.opts}
    params = group.commands["ingest"].make_context("ingest", argv[3:]).params
    assert str(params["archive"]) == env["ARCHIVE"] and params["shard"] == "1/3"
    assert params["workers"] == 4 and params["batch_size"] == 32 and params["collection"] == "cxr"
    assert params["qdrant_url"] == "http://qdrant:6333"
    assert (params["shards"], params["replication_factor"], params["write_consistency"]) == (3, 2, 1)


def fake_wait(result):
    def wait(url, api_key, **kwargs):
        if isinstance(result, Exception):
            raise result
        return result
    return wait


@pytest.mark.parametrize("probe,code", [
    (Probe("u", True, True, False, error="the API key was refused"), 77),
    (Probe("u", False, error="cannot reach Qdrant"), 69),
])
def test_wait_for_server_exit_codes(env, probe, code):
    cfg = worker.read_env(env)
    with pytest.raises(worker.WorkerError) as info:
        worker.wait_for_server(cfg, wait=fake_wait(NotReady(probe.error, probe)))
    assert info.value.code == code and "http://qdrant:6333" in str(info.value)


def test_wait_for_server_skips_the_embedded_store(env):
    cfg = worker.read_env({**env, "QDRANT_URL": ""})
    worker.wait_for_server(cfg, wait=fake_wait(AssertionError("must not probe")))


def test_later_shards_wait_for_the_collection(env):
    cfg = worker.read_env({**env, "COLLECTION_WAIT_SECONDS": "60"})
    answers, sleeps = iter([False, False, True]), []
    worker.wait_for_collection(cfg, exists=lambda url, key, name: next(answers), sleep=sleeps.append)
    assert sleeps == [5.0, 5.0]
    now = [0.0]
    with pytest.raises(worker.WorkerError, match="did not appear within 60 s") as info:
        worker.wait_for_collection(cfg, exists=lambda *a: False,
                                   sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert info.value.code == 75
    first = worker.read_env({**env, "SHARD": "0/3"})
    worker.wait_for_collection(first, exists=lambda *a: pytest.fail("shard 0 must not wait"))


def test_main_waits_then_execs_the_ingest(env):
    with FakeQdrant(api_key="k") as q:
        q.collections = ["cxr"]
        calls = []
        code = worker.main({**env, "QDRANT_URL": q.url}, execvp=lambda f, argv: calls.append(argv))
    assert code == 0 and len(calls) == 1
    assert calls[0][calls[0].index("--qdrant-url") + 1] == q.url
    assert "/readyz" in q.requests and "/collections/cxr" in q.requests


def test_main_returns_the_code_without_exec(env):
    with FakeQdrant(api_key="right") as q:
        code = worker.main({**env, "QDRANT_URL": q.url, "QDRANT_API_KEY": "wrong"},
                           execvp=lambda *a: pytest.fail("must not exec"))
    assert code == 77
    assert worker.main({**env, "SHARD": "x"}, execvp=lambda *a: pytest.fail("exec")) == 64
