"""Ingestion worker entry point (container PID 1 under `init`): read env, wait for Qdrant, exec `regionmir ingest`.

Orchestration only: the ingest itself is `regionmir.ingest.runner.run_ingest` behind the CLI.
Environment (see ingest/README.md):

    ARCHIVE                  archive folder inside the container        [/archive]
    REGIONMIR_MODEL          model folder or encoder.onnx                [/model]
    QDRANT_URL               Qdrant server; unset: embedded store in $REGIONMIR_HOME/store
    QDRANT_API_KEY           the server's API key (passed on through the environment)
    COLLECTION               collection name                             [regions]
    SHARD                    "i/n": this worker takes images with hash mod n == i   [0/1]
    WORKERS                  decode+crop processes                        [library default]
    BATCH_SIZE               crops per encoder call and upsert            [library default]
    QDRANT_SHARDS            server: shards of the collection, if this worker creates it   [server default]
    QDRANT_REPLICATION_FACTOR  server: copies of each shard (cluster)     [server default]
    QDRANT_WRITE_CONSISTENCY   server: replicas that must ack a write     [server default]
    REGIONMIR_SALT           pseudonym salt; required, the same for every shard and searcher
    QDRANT_WAIT_SECONDS      how long to wait for the server to be ready  [120]
    QDRANT_EXPECT_PEERS      cluster peers to wait for before starting    [0: do not wait]
    COLLECTION_WAIT_SECONDS  shards i > 0 wait this long for shard 0 to create the collection [600]

Exit codes: 0 done; 1 the ingest failed (message on stderr); 2 `regionmir` usage error;
64 bad environment; 66 archive or model missing; 69 Qdrant not ready in time;
75 the collection did not appear in time (shard 0 failed?); 77 API key refused.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from regionmir.ingest.sources import parse_shard
from regionmir.privacy import redact_urls

EX_OK, EX_USAGE, EX_NOINPUT, EX_UNAVAILABLE, EX_TEMPFAIL, EX_NOPERM = 0, 64, 66, 69, 75, 77

log = logging.getLogger("regionmir.worker")


class WorkerError(Exception):
    """A reason to stop before the ingest starts, with the exit code to stop with."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WorkerEnv:
    """The worker's settings, parsed from the environment."""

    archive: Path
    model: Path
    qdrant_url: str | None
    api_key: str | None
    collection: str
    shard: tuple[int, int]  # (i, n)
    workers: int | None
    batch_size: int | None
    shards: int | None  # collection layout, used by whichever worker creates the collection
    replication_factor: int | None
    write_consistency: int | None
    wait_s: float
    expect_peers: int
    collection_wait_s: float


def _number(env: Mapping[str, str], key: str, default, kind=int, low=0):
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise WorkerError(EX_USAGE, f"{key} must be a number, got {raw!r}") from None
    if value < low:
        raise WorkerError(EX_USAGE, f"{key} must be >= {low}, got {raw!r}")
    return value


def read_env(env: Mapping[str, str]) -> WorkerEnv:
    """Parse and check the environment (nothing is contacted).

    Raises:
        WorkerError: EX_USAGE for a malformed value or a missing salt, EX_NOINPUT when the
            archive or the model is not there.
    """
    try:
        shard = parse_shard(env.get("SHARD") or "0/1", "SHARD")
    except ValueError as e:
        raise WorkerError(EX_USAGE, str(e)) from None
    if not env.get("REGIONMIR_SALT"):
        raise WorkerError(EX_USAGE, "REGIONMIR_SALT is not set. Every shard and every searcher must "
                          "pseudonymize patients with the same salt: reuse the archive's salt "
                          "($REGIONMIR_HOME/salt where it was first ingested) or make one with "
                          "`openssl rand -hex 32`, and keep it with the store's backups.")
    archive = Path(env.get("ARCHIVE") or "/archive")
    model = Path(env.get("REGIONMIR_MODEL") or "/model")
    if not archive.is_dir():
        raise WorkerError(EX_NOINPUT, f"ARCHIVE {archive} is not a folder; mount the archive there "
                          "(read-only) or set ARCHIVE.")
    if not model.exists():
        raise WorkerError(EX_NOINPUT, f"REGIONMIR_MODEL {model} does not exist; mount the model "
                          "folder there (read-only) or set REGIONMIR_MODEL.")
    qdrant_url = (env.get("QDRANT_URL") or "").strip() or None
    layout = [k for k in ("QDRANT_SHARDS", "QDRANT_REPLICATION_FACTOR", "QDRANT_WRITE_CONSISTENCY")
              if _number(env, k, None, low=1) not in (None, 1)]
    if layout and not qdrant_url:
        raise WorkerError(EX_USAGE, f"{', '.join(layout)} need a Qdrant server: the embedded store "
                          "is a single shard. Set QDRANT_URL, or unset them.")
    return WorkerEnv(
        archive=archive, model=model,
        qdrant_url=qdrant_url,
        api_key=env.get("QDRANT_API_KEY") or None,
        collection=(env.get("COLLECTION") or "regions").strip(),
        shard=shard,
        workers=_number(env, "WORKERS", None),
        batch_size=_number(env, "BATCH_SIZE", None, low=1),
        shards=_number(env, "QDRANT_SHARDS", None, low=1),
        replication_factor=_number(env, "QDRANT_REPLICATION_FACTOR", None, low=1),
        write_consistency=_number(env, "QDRANT_WRITE_CONSISTENCY", None, low=1),
        wait_s=_number(env, "QDRANT_WAIT_SECONDS", 120.0, float),
        expect_peers=_number(env, "QDRANT_EXPECT_PEERS", 0),
        collection_wait_s=_number(env, "COLLECTION_WAIT_SECONDS", 600.0, float),
    )


def ingest_argv(cfg: WorkerEnv) -> list[str]:
    """The `regionmir ingest` command line for ``cfg`` (the API key travels in the environment)."""
    i, n = cfg.shard
    argv = ["regionmir", "--verbose", "ingest", str(cfg.archive), "--model", str(cfg.model),
            "--collection", cfg.collection, "--shard", f"{i}/{n}", "--json"]
    if cfg.qdrant_url:
        argv += ["--qdrant-url", cfg.qdrant_url]
    if cfg.workers is not None:
        argv += ["--workers", str(cfg.workers)]
    if cfg.batch_size is not None:
        argv += ["--batch-size", str(cfg.batch_size)]
    for flag, value in (("--shards", cfg.shards), ("--replication-factor", cfg.replication_factor),
                        ("--write-consistency", cfg.write_consistency)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def wait_for_server(cfg: WorkerEnv, wait=None, sleep: Callable[[float], None] = time.sleep) -> None:
    """Block until the server is ready (and the cluster has its peers); no-op for the embedded store.

    Raises:
        WorkerError: EX_NOPERM when the key is refused, EX_UNAVAILABLE when time runs out.
    """
    if not cfg.qdrant_url:
        return
    from regionmir.store.probe import NotReady, wait_until_ready

    wait = wait or wait_until_ready
    try:
        found = wait(cfg.qdrant_url, cfg.api_key, deadline_s=cfg.wait_s, expect_peers=cfg.expect_peers,
                     sleep=sleep, on_wait=lambda p: log.info("waiting for Qdrant: %s", p.error or "peers"))
    except NotReady as e:
        code = EX_NOPERM if e.probe.auth_ok is False else EX_UNAVAILABLE
        raise WorkerError(code, f"Qdrant at {cfg.qdrant_url}: {e}") from None
    log.info("Qdrant %s ready at %s (peers: %s)", found.version, found.url, found.peers or 1)


def wait_for_collection(cfg: WorkerEnv, exists=None, sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.monotonic) -> None:
    """Shards i > 0 on a server wait for shard 0 to create the collection, so only one creates it.

    Raises:
        WorkerError: EX_TEMPFAIL when it has not appeared after ``collection_wait_s``.
    """
    if not cfg.qdrant_url or cfg.shard[0] == 0:
        return
    from regionmir.store.probe import collection_exists

    exists = exists or collection_exists
    end = clock() + cfg.collection_wait_s
    while not exists(cfg.qdrant_url, cfg.api_key, cfg.collection):
        if clock() + 5.0 > end:
            raise WorkerError(EX_TEMPFAIL, f"collection {cfg.collection!r} did not appear within "
                              f"{cfg.collection_wait_s:.0f} s; check the worker of shard 0/{cfg.shard[1]}.")
        log.info("shard %d/%d: waiting for shard 0 to create %r", *cfg.shard, cfg.collection)
        sleep(5.0)


def main(env: Mapping[str, str] | None = None, execvp=os.execvp) -> int:
    """Run the worker; returns an exit code only when it stops before exec'ing the ingest."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s: %(message)s")
    env = os.environ if env is None else env
    try:
        cfg = read_env(env)
        wait_for_server(cfg)
        wait_for_collection(cfg)
    except WorkerError as e:
        log.error("%s", e)
        return e.code
    argv = ingest_argv(cfg)
    log.info("shard %d/%d: %s", *cfg.shard, redact_urls(" ".join(argv)))
    sys.stdout.flush()
    sys.stderr.flush()
    execvp(argv[0], argv)  # replaces this process: its exit code is the worker's
    return EX_OK  # only reached with a fake execvp


if __name__ == "__main__":
    sys.exit(main())
