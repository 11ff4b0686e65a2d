"""The joint trainer: the three trained pairings, one summed loss per step.

A run folder holds config.toml, checkpoints/latest.pt (atomic, every
`train.checkpoint_every` steps, on Ctrl-C and at the end) and metrics.jsonl. A run killed
at any moment resumes with `--resume`, losing at most one checkpoint interval; on the CPU
a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from fastjoint.config import Config, load_config, section_changes, to_dict, to_toml
from fastjoint.data import Split, load_split, pixel_rays
from fastjoint.data.split import to_float
from fastjoint.errors import UserError
from fastjoint.log import console
from fastjoint.pairing import SCENES, TRAINED
from fastjoint.render import render_rays, update_occupancy
from fastjoint.run import (
    CHECKPOINT,
    Built,
    build,
    dataset_path,
    ensure_datasets,
    load_checkpoint,
    pairing_field,
    resolve_device,
    save_checkpoint,
)


@dataclass(frozen=True)
class TrainSummary:
    run_dir: Path
    step: int
    train_seconds: float
    finished: bool  # reached train.steps (False when a time budget stopped it)
    psnr: dict[str, float]  # running training PSNR per pairing


def base_lr(config: Config) -> float:
    return config.mlp.lr if config.model.encoder == "mlp" else config.train.lr


def lr_factor(step: int, config: Config) -> float:
    """Hash grids: linear warm-up, then x0.33 at 50%, 75% and 90% of the steps (nerfacc's
    recipe). The mlp baseline: tenfold decay every mlp.lr_decay_steps (the research code's)."""
    if config.model.encoder == "mlp":
        return 0.1 ** (step / config.mlp.lr_decay_steps)
    train = config.train
    warm = min(1.0, (step + 1) / train.lr_warmup_steps) if train.lr_warmup_steps else 1.0
    decays = sum(step >= int(train.steps * f) for f in (0.5, 0.75, 0.9))
    return warm * 0.33**decays


class RaySampler:
    """Random training rays of one dataset: a random pixel of a random image per ray."""

    def __init__(self, split: Split, device: torch.device) -> None:
        self.split = split
        self.device = device
        self.pixels = split.pixels.to(device)  # uint8, made float per batch (see Split)
        self.poses = split.poses.to(device)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ray origins, directions and RGBA targets, each [n, ...]."""
        count, height, width = self.pixels.shape[:3]
        # Indices are drawn on the CPU generator so that runs repeat on any device.
        image = torch.randint(count, (n,), generator=generator).to(self.device)
        row = torch.randint(height, (n,), generator=generator).to(self.device)
        col = torch.randint(width, (n,), generator=generator).to(self.device)
        origins, dirs = pixel_rays(self.poses[image], col.float() + 0.5, row.float() + 0.5, self.split.camera)
        return origins, dirs, to_float(self.pixels[image, row, col])


class Trainer:
    def __init__(self, config: Config, resume: bool = False) -> None:
        self.config = config
        self.run_dir = config.run_dir
        checkpoint_path = self.run_dir / CHECKPOINT
        if resume and not checkpoint_path.is_file():
            raise UserError(f"{checkpoint_path}: no checkpoint to resume (train without --resume to start this run)")
        if not resume and checkpoint_path.is_file():
            raise UserError(
                f"{self.run_dir}: already holds a run; pass --resume to continue it or --name to start another"
            )

        ensure_datasets(config.data)
        self.splits = {p: load_split(dataset_path(config.data, p), "train", config.data.downscale) for p in TRAINED}

        self.device = resolve_device(config.device)
        _seed_everything(config.train.seed)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.built: Built = build(config, self.device)
        self.model = self.built.model
        self.samplers = {p: RaySampler(s, self.device) for p, s in self.splits.items()}
        self.fields = {p: pairing_field(self.model, p) for p in TRAINED}
        if config.model.encoder == "mlp":  # the research code's optimiser
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=base_lr(config), betas=(0.9, 0.999))
        else:  # instant-ngp's: tiny epsilon, no decay on the hash tables
            self.optimizer = torch.optim.Adam(
                [
                    {"params": self.model.grid_parameters(), "weight_decay": 0.0},
                    {"params": self.model.network_parameters(), "weight_decay": config.train.weight_decay},
                ],
                lr=base_lr(config),
                betas=(0.9, 0.99),
                eps=1e-15,
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        self.step = 0
        self.train_seconds = 0.0
        self.running_psnr: dict[str, float] = {}
        if resume:
            self._resume(checkpoint_path)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.toml").write_text(to_toml(config))

    # --- state -------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(),
            "estimators": self.built.estimators.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "sampler": self.generator.get_state(),
                "numpy": _numpy_state(),
                "python": list(random.getstate()[1]),
            },
            "running_psnr": self.running_psnr,
            "config": to_dict(self.config),
        }

    def save(self) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT, self._state())

    def _resume(self, path: Path) -> None:
        saved_config = load_config(self.run_dir / "config.toml")
        for section in ("model", "data"):
            changed = section_changes(saved_config, self.config, section)
            if changed:
                raise UserError(
                    f"{self.run_dir / 'config.toml'}: {changed[0]} differs from the run being resumed; "
                    "a resumed run keeps its model and data"
                )
        state = load_checkpoint(path, self.device)
        self.model.load_state_dict(state["model"])
        self.built.estimators.load_state_dict(state["estimators"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.running_psnr = dict(state["running_psnr"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.generator.set_state(rng["sampler"].cpu())
        _set_numpy_state(rng["numpy"])
        random.setstate((3, tuple(int(v) for v in rng["python"]), None))
        _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    # --- one step ----------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimisation step over the three pairings; returns its loss and PSNR per pairing."""
        config = self.config
        self.model.train()
        self.built.estimators.train()
        if config.model.encoder == "hashgrid":  # the mlp baseline samples uniformly, no grid
            for scene in SCENES:
                update_occupancy(
                    self.built.estimators[scene],
                    lambda x, scene=scene: self.model.density(scene, x),
                    self.step,
                    config.render,
                )
        losses, stats = [], {"rays": 0, "samples": 0}
        for pairing in TRAINED:
            rays_o, rays_d, rgba = self.samplers[pairing].sample(config.train.rays_per_pairing, self.generator)
            background = self._background(rgba.shape[0], self.splits[pairing].has_alpha)
            target = rgba[:, :3] * rgba[:, 3:] + background * (1.0 - rgba[:, 3:])
            offsets = torch.rand(rays_o.shape[0], generator=self.generator).to(self.device)
            result = render_rays(
                self.fields[pairing],
                self.built.samplers[pairing.scene],
                rays_o,
                rays_d,
                background,
                self.built.backends.composite,
                offsets=offsets,
            )
            loss = torch.nn.functional.mse_loss(result.rgb, target)
            losses.append(loss)
            stats[f"loss/{pairing.name}"] = loss.item()
            stats[f"psnr/{pairing.name}"] = _psnr(stats[f"loss/{pairing.name}"])
            stats["rays"] += rays_o.shape[0]
            stats["samples"] += result.n_samples
        self.optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return stats

    def _background(self, n: int, has_alpha: bool) -> torch.Tensor:
        if has_alpha and self.config.train.random_background:
            return torch.rand(n, 3, generator=self.generator).to(self.device)
        return torch.tensor(self.config.render.background, device=self.device).expand(n, 3)

    # --- the loop ----------------------------------------------------------------------

    def run(self, max_seconds: float | None = None) -> TrainSummary:
        config = self.config.train
        metrics_path = self.run_dir / "metrics.jsonl"
        started = time.perf_counter() - self.train_seconds
        window: list[dict[str, float]] = []
        rays_per_second = 0.0
        progress = _TrainProgress(
            TextColumn("[bold]train[/bold] step {task.completed}/{task.total}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
        )
        task = progress.add_task("train", total=config.steps, completed=self.step, rate="", psnr="")
        try:
            with progress, open(metrics_path, "a") as metrics:
                while self.step < config.steps:
                    if max_seconds is not None and self.train_seconds >= max_seconds:
                        break
                    tick = time.perf_counter()
                    stats = self.train_step()
                    elapsed = time.perf_counter() - tick
                    self.train_seconds = time.perf_counter() - started
                    window.append(stats)
                    rays_per_second = 0.9 * rays_per_second + 0.1 * stats["rays"] / elapsed if rays_per_second else stats["rays"] / elapsed
                    for pairing in TRAINED:
                        key = f"psnr/{pairing.name}"
                        old = self.running_psnr.get(pairing.name)
                        self.running_psnr[pairing.name] = stats[key] if old is None else 0.9 * old + 0.1 * stats[key]
                    progress.update(
                        task,
                        completed=self.step,
                        rate=f"{rays_per_second / 1000:.1f}k rays/s",
                        psnr="  ".join(f"{p.name} {self.running_psnr[p.name]:.1f}" for p in TRAINED) + " dB",
                    )
                    last = self.step == config.steps
                    if self.step % config.log_every == 0 or last:
                        metrics.write(json.dumps(self._metrics_line(window)) + "\n")
                        metrics.flush()
                        window = []
                    if self.step % config.checkpoint_every == 0 or last:
                        self.save()
        except KeyboardInterrupt:
            self.save()
            console.print(f"interrupted at step {self.step}; checkpoint written, continue with --resume")
            raise
        if self.step % config.checkpoint_every != 0 and self.step != config.steps:
            self.save()  # stopped by the time budget
        return TrainSummary(
            self.run_dir, self.step, self.train_seconds, self.step >= config.steps, dict(self.running_psnr)
        )

    def _metrics_line(self, window: list[dict[str, float]]) -> dict:
        line: dict[str, float | int | dict] = {
            "step": self.step,
            "wall_seconds": round(self.train_seconds, 3),
            "lr": self.optimizer.param_groups[0]["lr"],
            "samples_per_ray": sum(w["samples"] for w in window) / max(1, sum(w["rays"] for w in window)),
        }
        for pairing in TRAINED:
            loss = float(np.mean([w[f"loss/{pairing.name}"] for w in window]))
            line[f"loss/{pairing.name}"] = loss
            line[f"psnr/{pairing.name}"] = _psnr(loss)
        return line


class _TrainProgress(Progress):
    """A progress bar with the running PSNR of every pairing on a line of its own."""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            if task.fields.get("psnr"):
                yield Text(f"  PSNR  {task.fields['psnr']}")


def train(config: Config, resume: bool = False, max_seconds: float | None = None) -> TrainSummary:
    """Trains (or resumes) the run of `config`."""
    return Trainer(config, resume=resume).run(max_seconds=max_seconds)


def _psnr(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_state(state: dict) -> None:
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["pos"], state["has_gauss"], state["cached"]))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops lines written after the checkpoint being resumed, so steps never repeat."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a line cut by the kill: everything after it is newer
    path.write_text("".join(k + "\n" for k in kept))
