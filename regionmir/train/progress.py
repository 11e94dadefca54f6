"""Training progress: a small reporting interface and its rich implementation (epoch, loss, rate, ETA)."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager


class Progress:
    """Silent progress reporter; subclasses draw something."""

    def phase(self, label: str, total_steps: int, epochs: int, unit: str = "crops") -> None:
        """A new training phase of ``total_steps`` optimizer steps over ``epochs`` epochs.

        ``unit`` names what the rate counts ("crops", "films").
        """

    def step(self, epoch: int, loss: float, crops_per_s: float) -> None:
        """One optimizer step finished in ``epoch`` (1-based) with running ``loss``."""

    def note(self, text: str) -> None:
        """A one-line message (data loading, evaluation, export)."""


class RichProgress(Progress, AbstractContextManager):
    """Progress bars on stderr: phase, epoch i/n, loss, crops/s, elapsed and ETA."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as Bar,
        )

        self.console = Console(stderr=True)
        self._bar = Bar(
            TextColumn("[bold]{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            TextColumn("loss {task.fields[loss]:>7}"),
            TextColumn("{task.fields[rate]:>6.0f} {task.fields[unit]}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self._task = None
        self._per_epoch = 1
        self.enabled = enabled

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()

    def phase(self, label: str, total_steps: int, epochs: int, unit: str = "crops") -> None:
        self._task = self._bar.add_task(label, total=total_steps, epoch=0, epochs=epochs,
                                        loss="-", rate=0.0, unit=unit)
        self._per_epoch = max(1, total_steps // max(1, epochs))

    def step(self, epoch: int, loss: float, crops_per_s: float) -> None:
        text = f"{loss:.4f}" if math.isfinite(loss) else "-"
        self._bar.update(self._task, advance=1, epoch=epoch, loss=text, rate=crops_per_s)
        task = self._bar.tasks[-1]
        if self.enabled and not self.console.is_terminal and task.completed % self._per_epoch == 0:
            self._log_line(task, epoch, text, crops_per_s)  # no live bars in a log file

    def _log_line(self, task, epoch: int, loss: str, rate: float) -> None:
        elapsed = task.elapsed or 0.0
        eta = elapsed / task.completed * (task.total - task.completed) if task.completed else 0.0
        self.console.print(
            f"{task.description}: epoch {epoch}/{task.fields['epochs']} loss {loss} "
            f"{rate:.0f} {task.fields['unit']}/s elapsed {elapsed:.0f} s ETA {eta:.0f} s", highlight=False)

    def note(self, text: str) -> None:
        if self.enabled:
            self._bar.console.print(text, highlight=False)
