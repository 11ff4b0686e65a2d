"""The joint trainer: every trained pairing, one summed loss per step.

A run folder holds config.toml, checkpoints/latest.pt (atomic, every
`train.checkpoint_every` steps, on Ctrl-C and at the end) and metrics.jsonl. A run killed
at any moment resumes with `--resume`, losing at most one checkpoint interval; on the CPU
a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fastjoint.architecture import architecture
from fastjoint.config import Config, changed_keys, load_config, to_dict, to_toml
from fastjoint.data import RaySampler, load_split
from fastjoint.errors import UserError
from fastjoint.log import console
from fastjoint.pairing import SCENES, Pairing
from fastjoint.render import update_occupancy
from fastjoint.render.background import LEARNED, RANDOM
from fastjoint.rng import capture_rng, restore_rng, seed_everything
from fastjoint.run import (
    CHECKPOINT,
    Built,
    ensure_datasets,
    load_checkpoint,
    resolve_backgrounds,
    resolve_device,
    save_checkpoint,
)
from fastjoint.trainlog import MetricsLog, StepStats, TrainProgress

# Settings that shape a checkpoint's tensors or the meaning of its weights: a resumed run keeps them.
KEPT_ON_RESUME = ("model", "mlp", "data", "render.occ_resolution", "render.occ_levels")


@dataclass(frozen=True)
class TrainSummary:
    run_dir: Path
    step: int
    train_seconds: float
    finished: bool  # reached train.steps (False when a time budget stopped it)
    psnr: dict[str, float]  # running training PSNR per pairing


class Trainer:
    """Trains (or resumes) the run of a config: `run()` is the loop, `train_step()` one step."""

    def __init__(self, config: Config, resume: bool = False) -> None:
        self.config = config
        self.run_dir = config.run_dir
        self.resumed = resume
        self.pairings = config.data.pairings.trained
        checkpoint_path = self.run_dir / CHECKPOINT
        if resume and not checkpoint_path.is_file():
            raise UserError(f"{checkpoint_path}: no checkpoint to resume (train without --resume to start this run)")
        if not resume and checkpoint_path.is_file():
            raise UserError(
                f"{self.run_dir}: already holds a run; pass --resume to continue it or --name to start another"
            )

        ensure_datasets(config.data)
        data = config.data
        splits = {p: load_split(data.dataset(p), "train", data.downscale) for p in self.pairings}
        backgrounds = resolve_backgrounds(config, {p: s.has_alpha for p, s in splits.items()})

        self.device = resolve_device(config.device)
        seed_everything(config.train.seed)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.built = Built(config, self.device, backgrounds)
        self.model = self.built.model
        self.rays = {p: RaySampler(s, self.device) for p, s in splits.items()}
        self.architecture = architecture(config)
        self.optimizer = self.architecture.optimizer(self.model, config)
        if len(self.built.environments):  # learned backgrounds: textures, so no weight decay
            self.optimizer.add_param_group(
                {"params": list(self.built.environments.parameters()), "lr": config.train.lr, "weight_decay": 0.0}
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: self.architecture.lr_factor(step, config)
        )
        self.step = 0
        self.train_seconds = 0.0
        self.running_psnr: dict[str, float] = {}
        if resume:
            self._resume(checkpoint_path)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.toml").write_text(to_toml(config))

    # --- state -------------------------------------------------------------------------

    def save(self) -> None:
        """Writes checkpoints/latest.pt atomically."""
        state = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            **self.built.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(self.generator),
            "running_psnr": self.running_psnr,
            "config": to_dict(self.config),
        }
        save_checkpoint(self.run_dir / CHECKPOINT, state)

    def _resume(self, path: Path) -> None:
        saved_path = self.run_dir / "config.toml"
        changed = changed_keys(load_config(saved_path), self.config, KEPT_ON_RESUME)
        if changed:
            raise UserError(f"{saved_path}: {changed[0]} differs from the run being resumed; a resumed run keeps its model and data")
        state = load_checkpoint(path, self.device)
        self.built.load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.running_psnr = dict(state["running_psnr"])
        restore_rng(state["rng"], self.generator)

    # --- one step ----------------------------------------------------------------------

    def train_step(self) -> StepStats:
        """One optimisation step over every trained pairing."""
        config = self.config
        self.built.train()
        if self.architecture.uses_occupancy:
            for scene in SCENES:
                density = lambda x, scene=scene: self.model.density(scene, x)  # noqa: E731
                update_occupancy(self.built.estimators[scene], density, self.step, config.render)
        losses, names, rays, samples = [], {}, 0, 0
        for pairing in self.pairings:
            rays_o, rays_d, rgba = self.rays[pairing].sample(config.train.rays_per_pairing, self.generator)
            background = self._background(pairing, rays_d)
            target = rgba[:, :3] * rgba[:, 3:] + background.detach() * (1.0 - rgba[:, 3:])
            offsets = torch.rand(rays_o.shape[0], generator=self.generator).to(self.device)
            result = self.built.render_rays(pairing, rays_o, rays_d, background, offsets)
            loss = torch.nn.functional.mse_loss(result.rgb, target)
            losses.append(loss)
            names[pairing.name] = loss.item()
            rays += rays_o.shape[0]
            samples += result.n_samples
        self.optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return StepStats(names, rays, samples)

    def _background(self, pairing: Pairing, rays_d: torch.Tensor) -> torch.Tensor:  # [n, 3] -> [n, 3]
        """The training background of a batch: random per ray, learned from the directions, or a colour."""
        n, choice = rays_d.shape[0], self.built.background(pairing)
        if choice == RANDOM:
            return torch.rand(n, 3, generator=self.generator).to(self.device)
        if choice == LEARNED:
            return self.built.environments[pairing.slug](rays_d)
        return torch.tensor(choice, device=self.device).expand(n, 3)

    # --- the loop ----------------------------------------------------------------------

    def run(self, max_seconds: float | None = None) -> TrainSummary:
        """Trains until `train.steps` (or `max_seconds` of training), checkpointing as it goes."""
        config = self.config.train
        started = time.perf_counter() - self.train_seconds
        metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.step if self.resumed else None)
        progress = TrainProgress(config.steps, self.step, self.running_psnr)
        try:
            with progress, metrics:
                while self.step < config.steps:
                    if max_seconds is not None and self.train_seconds >= max_seconds:
                        break
                    tick = time.perf_counter()
                    stats = self.train_step()
                    progress.update(self.step, stats, time.perf_counter() - tick)
                    self.train_seconds = time.perf_counter() - started
                    metrics.add(stats)
                    last = self.step == config.steps
                    if self.step % config.log_every == 0 or last:
                        metrics.write(self.step, self.train_seconds, self.optimizer.param_groups[0]["lr"])
                    if self.step % config.checkpoint_every == 0 or last:
                        self.save()
        except KeyboardInterrupt:
            self.save()
            console.print(f"interrupted at step {self.step}; checkpoint written, continue with --resume")
            raise
        if self.step % config.checkpoint_every != 0 and self.step != config.steps:
            self.save()  # stopped by the time budget
        return TrainSummary(self.run_dir, self.step, self.train_seconds, self.step >= config.steps, dict(self.running_psnr))


def train(config: Config, resume: bool = False, max_seconds: float | None = None) -> TrainSummary:
    """Trains (or resumes) the run of `config`."""
    return Trainer(config, resume=resume).run(max_seconds=max_seconds)
