"""What a training run reports: metrics.jsonl and the progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from fastjoint.files import naming, write_text
from fastjoint.log import console
from fastjoint.metrics import psnr_from_mse


class StepStats(NamedTuple):
    """What one training step measured."""

    loss: dict[str, float]  # pairing name -> its mean squared error
    rays: int
    samples: int
    cover: float | None = None  # the cover term (fastjoint.train.cover_term), on the steps it trains

    @property
    def psnr(self) -> dict[str, float]:
        return {name: psnr_from_mse(loss) for name, loss in self.loss.items()}


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step.

    A fresh run starts the file anew (lines left by an attempt that died before its first
    checkpoint are dropped); a resumed run drops the lines written after its checkpoint, so
    steps never repeat.
    """

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text("")
        else:
            _truncate(path, resume_step)
        self.window: list[StepStats] = []
        self._handle: IO[str] | None = None

    def __enter__(self) -> MetricsLog:
        self._handle = open(self.path, "a")
        return self

    def __exit__(self, *exc) -> None:
        assert self._handle is not None
        with naming(self.path):
            self._handle.close()

    def add(self, stats: StepStats) -> None:
        self.window.append(stats)

    def write(self, step: int, wall_seconds: float, lr: float) -> None:
        """Writes the steps added since the last line as one line (means over the window)."""
        assert self._handle is not None and self.window, "MetricsLog.write needs an open log and added steps"
        window = self.window
        line: dict[str, float | int] = {
            "step": step,
            "wall_seconds": round(wall_seconds, 3),
            "lr": lr,
            "samples_per_ray": sum(w.samples for w in window) / max(1, sum(w.rays for w in window)),
            "rays_per_step": sum(w.rays for w in window) / len(window),
        }
        for name in window[0].loss:
            loss = float(np.mean([w.loss[name] for w in window]))
            line[f"loss/{name}"] = loss
            line[f"psnr/{name}"] = psnr_from_mse(loss)
        covers = [w.cover for w in window if w.cover is not None]
        if covers:
            line["loss/cover"] = float(np.mean(covers))
        with naming(self.path):
            self._handle.write(json.dumps(line) + "\n")
            self._handle.flush()
        self.window = []


def _truncate(path: Path, step: int) -> None:
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a line cut by the kill: everything after it is newer
    write_text(path, "".join(k + "\n" for k in kept))  # atomic: a kill here keeps the old log


class TrainProgress:
    """The progress bar: step, rays per second, time left, and the running PSNR of each pairing."""

    def __init__(self, total: int, completed: int, running_psnr: dict[str, float]) -> None:
        self.running_psnr = running_psnr
        self.rays_per_second = 0.0
        self._bar = _Bar(
            TextColumn("[bold]train[/bold] step {task.completed}/{task.total}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._bar.add_task("train", total=total, completed=completed, rate="", psnr="")

    def __enter__(self) -> TrainProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # stopped by an error or a signal: its one line says where, the bar goes
            self._bar.live.transient = True
        self._bar.__exit__(*exc)

    def update(self, step: int, stats: StepStats, seconds: float) -> None:
        """Folds one step into the running averages and redraws."""
        rate = stats.rays / seconds
        self.rays_per_second = 0.9 * self.rays_per_second + 0.1 * rate if self.rays_per_second else rate
        for name, value in stats.psnr.items():
            old = self.running_psnr.get(name)
            self.running_psnr[name] = value if old is None else 0.9 * old + 0.1 * value
        self._bar.update(
            self._task,
            completed=step,
            rate=f"{self.rays_per_second / 1000:.1f}k rays/s",
            psnr="  ".join(f"{name} {value:.1f}" for name, value in self.running_psnr.items()) + " dB",
        )


class _Bar(Progress):
    """A progress bar with the running PSNR of every pairing on a line of its own."""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            if task.fields.get("psnr"):
                yield Text(f"  PSNR  {task.fields['psnr']}")
