"""The searches compared in-process and through the server, and starting and stopping a real server."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from helpers.catalogue import CLI, SALT

# (name, `regionmir search` options): each is asked in-process first, then through the server
CASES = {
    "lung": ["--anatomy", "left-lung", "--top-k", "7"],
    "all": ["--anatomy", "all", "--top-k", "5"],
    "where": ["--anatomy", "right-lung", "--where", "ctr>0.3", "--top-k", "6", "--exact"],
}


def start_server(home: Path, tmp: Path, *args: str, env: dict | None = None):
    """`regionmir serve --port 0` on ``home`` (uploads under ``tmp``); ``(process, url)`` once it answers."""
    (home / "serve.json").unlink(missing_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "REGIONMIR_HOME": str(home), "REGIONMIR_SALT": SALT, "QDRANT_URL": "",
           "TMPDIR": str(tmp), **(env or {})}
    proc = subprocess.Popen([str(CLI), "serve", "--port", "0", *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read()}")
        try:
            info = json.loads((home / "serve.json").read_text())
            if info["pid"] == proc.pid:
                return proc, info["url"]
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve did not announce itself in 180 s")


def stop_server(proc, signum: int = 2) -> str:
    """Stop a server with ``signum`` (2: as Ctrl-C does); its stderr."""
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


