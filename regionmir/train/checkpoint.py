"""Training checkpoints: the state after each epoch, so a stopped `regionmir train` resumes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("regionmir")


class Checkpoint:
    """One strategy's checkpoint file, valid only for the run settings in ``key``.

    The saved dict holds ``phase`` (index), ``epoch`` (last finished epoch of that phase),
    ``model``, ``opt``, ``sched``, ``scaler`` state dicts and the loss ``history`` so far.
    """

    def __init__(self, path: str | Path, key: dict):
        self.path, self.key = Path(path), key

    def load(self, device: torch.device) -> dict | None:
        """The saved state, or None when there is none or it belongs to other settings or data."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - a torn or foreign file: start over
            log.warning("ignoring unreadable checkpoint %s: %s", self.path, e)
            return None
        if state.get("key") != self.key:
            log.info("checkpoint %s is from other settings or data: starting over", self.path)
            return None
        return state

    def save(self, state: dict) -> None:
        """Write ``state`` atomically (a kill leaves the previous checkpoint)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({**state, "key": self.key}, tmp)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Delete the checkpoint (after a finished run, so the next run starts afresh)."""
        self.path.unlink(missing_ok=True)
