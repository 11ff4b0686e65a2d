"""The joint trainer: every trained pairing, one summed loss per step.

For the first `train.cover_until_step` steps (a sixth of them by default) the sum also holds the cover term
(`cover_term`, weighted by `train.cover_weight`): it pulls each of the target's surface
features in the batch toward the nearest of the reference's, so that the target's
materials settle on the feature plane where the reference's are, and the desired styles'
decoders, which only the reference's photos train, read the target where they were trained.
With `train.style_smoothness` (off by default) every step also holds each desired style's
roughness (`style_roughness`): how fast the style's change of colour (its decoder minus the
original's) varies across the feature plane, at random points of it, so that where no
reference feature pins the change down it is that of the nearest ones.
Every step also holds the saturation penalty (`feature_saturation`, weighted by
`train.saturation_weight`): each scene's surface features in the batch are held where their tanh
still passes gradient, so that no scene's features sit stuck in a corner of the plane.
Once `train.steps` are reached, the analogy fit (fastjoint.analogy, `train.analogy_steps`) fits each
desired style's decoder again, so that the target takes the change of colour the reference shows
where it looks most alike; the checkpoint records it (`analogy_fitted`), so a resumed run runs it once.

A run folder holds config.toml, checkpoints/latest.pt (atomic, every
`train.checkpoint_every` steps, on Ctrl-C or SIGTERM and at the end) with the one before it
beside it (checkpoints/previous.pt), and metrics.jsonl. A run killed at any moment resumes
with `--resume`, losing at most one checkpoint interval; on the CPU a resumed run continues
exactly as an uninterrupted one would. One process at a time trains a run (RUN/.lock); a
non-finite loss or parameter stops training without saving the broken state.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fastjoint.analogy import fit_styles
from fastjoint.architecture import architecture
from fastjoint.checkpoints import CHECKPOINT, PREVIOUS, first_line, has_checkpoint, load_checkpoint, load_latest, save_checkpoint
from fastjoint.colours import LEARNED, RANDOM
from fastjoint.config import Config, changed_keys, load_config, to_dict, to_toml
from fastjoint.data import RaySampler
from fastjoint.data.formats import detect_format
from fastjoint.datasets import check_test_splits, ensure_datasets, load_scene_split
from fastjoint.errors import Interrupted, UserError
from fastjoint.files import RunLock, remove_partials, write_text
from fastjoint.log import console
from fastjoint.pairing import ORIGINAL, SCENES, Pairing
from fastjoint.render import RenderResult, update_occupancy
from fastjoint.render.extent import default_extents, resolve_extents, saved_extents
from fastjoint.rng import capture_rng, restore_rng, seed_everything
from fastjoint.run import Built, resolve_backgrounds, resolve_device, saved_backgrounds
from fastjoint.trainlog import MetricsLog, StepStats, TrainProgress

TARGET_SAMPLES_CUDA = 2**18  # train.target_samples = "auto" on CUDA: nerfacc's batch
MIN_BATCH_RAYS = 64  # the fewest rays an adaptive batch draws per pairing
SURFACE_OPACITY = 0.5  # a training ray whose opacity passes this has hit a surface (the cover term's points)
SMOOTH_POINTS = 4096  # train.style_smoothness: random points of the feature plane per step and style
SMOOTH_STEP = 0.02  # train.style_smoothness: the finite difference's step on the plane
FEATURE_BOUND = 2.0  # train.saturation_weight: the style feature's logit beyond this is penalised (tanh(2) = 0.96)
COVER_MIN_POINTS = 8  # fewer surface points than this in either scene's batch: no cover term that step

# Settings that shape a checkpoint's tensors or the meaning of its weights: a resumed run keeps them.
KEPT_ON_RESUME = ("model", "mlp", "data", "render.occ_resolution", "render.occ_levels", "render.cone_angle", "render.near")


@dataclass(frozen=True)
class TrainSummary:
    run_dir: Path
    step: int
    train_seconds: float
    finished: bool  # reached train.steps (False when a time budget stopped it)
    psnr: dict[str, float]  # running training PSNR per pairing


class Trainer:
    """Trains (or resumes) the run of a config: `run()` is the loop, `train_step()` one step."""

    def __init__(self, config: Config, resume: bool = False, check_test: bool = True) -> None:
        """Checks everything the run needs, takes the run's lock, and loads or starts the run.

        Args:
            config: the run's config.
            resume: continue the run from its checkpoint.
            check_test: also check, before training, the test splits that evaluation will need.
        """
        self.config = config
        self.run_dir = config.run_dir
        self.resumed = resume
        self.pairings = config.data.pairings.trained
        checkpoint_path = self.run_dir / CHECKPOINT
        if resume and not self.run_dir.is_dir():
            raise UserError(f"{checkpoint_path}: no checkpoint to resume (train without --resume to start this run)")

        # Everything that only reads comes first: a mistake found here leaves no trace on disk.
        ensure_datasets(config.data)
        data = config.data
        if check_test:
            check_test_splits(data)
        splits = {p: load_scene_split(data, p.scene, data.dataset(p), "train") for p in self.pairings}
        backgrounds = resolve_backgrounds(config, {p: s.transparent for p, s in splits.items()})
        originals = {scene: splits[Pairing(scene, ORIGINAL)] for scene in SCENES}
        extents = resolve_extents(
            config,
            {scene: detect_format(data.dataset(Pairing(scene, ORIGINAL))) for scene in SCENES},
            {scene: split.transparent for scene, split in originals.items()},
            {scene: split.reach for scene, split in originals.items()},
        )
        saved = self._saved_state() if resume else None
        if saved is not None:  # a resumed run keeps the backgrounds and extents it was trained with (`auto` may decide otherwise today)
            backgrounds = saved_backgrounds(config, saved) or backgrounds
            extents = saved_extents(saved) or default_extents(config)  # a checkpoint from before extents: bounded
        decided = [
            f"{p.name} {choice if isinstance(choice, str) else 'render.background'} ({'transparent' if splits[p].transparent else 'opaque'} photos)"
            for p, choice in backgrounds.items()
            if data.background(p) == "auto"
        ]
        if decided:  # what `auto` made of each dataset's pixels, said once
            print("background auto: " + ", ".join(decided))
        if data.unbounded == "auto" and any(extent.unbounded for extent in extents.values()):
            print("unbounded auto: " + "; ".join(f"{scene} {extent.describe(data.aabb)}" for scene, extent in extents.items()))

        self.device = resolve_device(config.device)
        target = config.train.target_samples
        self.target_samples = (TARGET_SAMPLES_CUDA if self.device.type == "cuda" else 0) if target == "auto" else target
        self.batch_rays = {p: config.train.rays_per_pairing for p in self.pairings}  # adapted when target_samples > 0
        seed_everything(config.train.seed)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.built = Built(config, self.device, backgrounds, extents)
        self.model = self.built.model
        self.rays = {p: RaySampler(s, self.device) for p, s in splits.items()}
        self.originals = originals  # the analogy fit samples both scenes' training views
        self.analogy_fitted = False  # whether the analogy fit has run (it runs once train.steps is reached)
        self.architecture = architecture(config)
        self.optimizer = self.architecture.optimizer(self.model, config)
        if len(self.built.environments):  # learned backgrounds: textures, so no weight decay
            self.optimizer.add_param_group(
                {"params": list(self.built.environments.parameters()), "lr": config.train.lr, "weight_decay": 0.0}
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: self.architecture.lr_factor(step, config))
        self.step = 0
        self.train_seconds = 0.0
        self.running_psnr: dict[str, float] = {}
        self.saved_step: int | None = None  # the step of the newest whole checkpoint on disk
        self._rotate = True  # False while latest.pt is a broken file that must not become previous.pt

        self.lock = RunLock(self.run_dir).acquire()
        try:
            holds = has_checkpoint(self.run_dir)
            if resume and not holds:
                raise UserError(f"{checkpoint_path}: no checkpoint to resume (train without --resume to start this run)")
            if not resume and holds:
                raise UserError(f"{self.run_dir}: already holds a run; pass --resume to continue it or --name to start another")
            if resume:
                self._resume()
            remove_partials(checkpoint_path.parent)  # left by a run killed while it saved
            write_text(self.run_dir / "config.toml", to_toml(config))
        except BaseException:
            self.lock.release()
            raise

    def _saved_state(self) -> dict | None:
        """The run's checkpoint, or None (none there yet, or one that cannot be read: resuming then reports it)."""
        for path in (self.run_dir / CHECKPOINT, self.run_dir / PREVIOUS):  # as load_latest falls back, quietly
            try:
                return load_checkpoint(path, torch.device("cpu"))
            except UserError:
                continue
        return None

    def close(self) -> None:
        """Releases the run's lock (`run()` does; a caller that only steps calls it, or uses `with`)."""
        self.lock.release()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- state -------------------------------------------------------------------------

    def save(self) -> None:
        """Writes checkpoints/latest.pt atomically; the one it replaces becomes checkpoints/previous.pt."""
        self._check_parameters()
        state = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            **self.built.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(self.generator),
            "running_psnr": self.running_psnr,
            "batch_rays": {p.name: n for p, n in self.batch_rays.items()},
            "config": to_dict(self.config),
            "analogy_fitted": self.analogy_fitted,
        }
        previous = self.run_dir / PREVIOUS if self._rotate else None
        save_checkpoint(self.run_dir / CHECKPOINT, state, previous=previous)
        self._rotate = True
        self.saved_step = self.step

    def _resume(self) -> None:
        saved_path = self.run_dir / "config.toml"
        changed = changed_keys(load_config(saved_path, saved=True), self.config, KEPT_ON_RESUME)
        if changed:
            raise UserError(f"{saved_path}: {changed[0]} differs from the run being resumed; a resumed run keeps its model and data")
        state, source = load_latest(self.run_dir, self.device, self._load)
        self._rotate = source == self.run_dir / CHECKPOINT  # else latest.pt is broken: never keep it
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.running_psnr = dict(state["running_psnr"])
        self.analogy_fitted = bool(state.get("analogy_fitted", False))  # a checkpoint from before the fit: not yet
        self.saved_step = self.step

    def _load(self, state: dict, source: Path) -> None:
        """Puts a checkpoint's state into the model, optimizer, scheduler and random generators.

        The optimizer keeps its moments and step counts from the checkpoint but takes its
        hyperparameters (learning rate, weight decay) from this config, so that a run that
        diverged can be resumed with a lower learning rate; with the same config they are the
        same numbers, and the resumed run stays bit for bit.
        """
        self.built.load_state_dict(state, source)
        configured = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            restore_rng(state["rng"], self.generator)
            float(state["train_seconds"]), dict(state["running_psnr"])
            saved_rays = {str(k): int(v) for k, v in state.get("batch_rays", {}).items()}
        except (KeyError, ValueError, TypeError, RuntimeError) as error:
            raise UserError(f"{source}: not a checkpoint of this run ({first_line(error)})") from None
        factor = self.architecture.lr_factor(self.scheduler.last_epoch, self.config)
        for group, hyper in zip(self.optimizer.param_groups, configured, strict=True):
            group.update(hyper)
            group["lr"] = group["initial_lr"] * factor
        self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if self.target_samples:  # an adaptive batch continues from the size it had reached
            self.batch_rays = {p: saved_rays.get(p.name, n) for p, n in self.batch_rays.items()}

    def _check_parameters(self) -> None:
        """Raises NonFinite when a parameter holds NaN or infinity, so that it is never saved.

        The loss is checked every step; the parameters before each log line and checkpoint.
        """
        for name, parameter in self.model.named_parameters():
            if not torch.isfinite(parameter).all():
                raise NonFinite(f"parameter '{name}' holds NaN or infinity", self.step)

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
        surfaces: dict[str, torch.Tensor] = {}  # scene -> its batch's surface features, while the cover term trains
        covering = config.train.cover_weight > 0 and (config.train.cover_steps == 0 or self.step < config.train.cover_steps)
        bounding = config.train.saturation_weight > 0
        saturations = []  # per scene: how far its batch's surface features' logits pass FEATURE_BOUND
        for pairing in self.pairings:
            rays_o, rays_d, rgba = self.rays[pairing].sample(self.batch_rays[pairing], self.generator)
            background = self._background(pairing, rays_d)
            target = rgba[:, :3] * rgba[:, 3:] + background.detach() * (1.0 - rgba[:, 3:])
            offsets = torch.rand(rays_o.shape[0], generator=self.generator).to(self.device)
            result = self.built.render_rays(pairing, rays_o, rays_d, background, offsets)
            loss = torch.nn.functional.mse_loss(result.rgb, target)
            losses.append(loss)
            names[pairing.name] = loss.item()
            rays += rays_o.shape[0]
            samples += result.n_samples
            if self.target_samples:
                self.batch_rays[pairing] = adapted_rays(rays_o.shape[0], result.n_samples, self.target_samples)
            if (covering or bounding) and pairing.style == ORIGINAL:
                logits = self._surface_logits(pairing.scene, rays_o, rays_d, result)
                if covering:
                    surfaces[pairing.scene] = logits.tanh()
                if bounding and logits.shape[0] > 0:
                    saturations.append(feature_saturation(logits))
        cover = cover_term(surfaces["target"], surfaces["reference"]) if len(surfaces) == 2 else None
        if cover is not None:
            losses.append(config.train.cover_weight * cover)
            if not math.isfinite(cover.item()):
                raise NonFinite(f"the cover term is {cover.item()}", self.step + 1)
        if saturations:
            losses.append(config.train.saturation_weight * torch.stack(saturations).mean())
        if config.train.style_smoothness > 0:
            points, steps = plane_points(self.model.feature_dim, self.generator, self.device)
            losses.append(config.train.style_smoothness * style_roughness(self.model, config.data.pairings.desired, points, steps))
        for name, value in names.items():
            if not math.isfinite(value):
                raise NonFinite(f"the loss of {name} is {value}", self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        try:
            self.optimizer.step()
        except RuntimeError as error:  # an update too large for float32 (a learning rate near 1e38)
            if "overflow" not in str(error):
                raise
            raise NonFinite("the parameter update overflows float32", self.step + 1) from None
        self.scheduler.step()
        self.step += 1
        return StepStats(names, rays, samples, None if cover is None else cover.item())

    def _surface_logits(self, scene: str, rays_o: torch.Tensor, rays_d: torch.Tensor, result: RenderResult) -> torch.Tensor:
        """The style features before their tanh [k, feature_dim] where a batch's rays hit a surface (opacity
        above SURFACE_OPACITY, at their expected depth), differentiable in the encoder but not in the depth."""
        hit, points = result.surface(rays_o, rays_d, SURFACE_OPACITY)
        if not hit.any():  # (not every encoder takes an empty batch)
            return torch.empty(0, self.model.feature_dim, device=self.device)
        return self.model.feature_logits(scene, points.detach(), rays_d[hit])

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
        """Trains until `train.steps` (or `max_seconds` of training), checkpointing as it goes.

        Ctrl-C or SIGTERM writes a checkpoint and raises Interrupted with the line to print; a
        non-finite loss or parameter raises UserError naming the step, keeping the last good
        checkpoint. The run's lock is released when this returns or raises.
        """
        try:
            return self._loop(max_seconds)
        finally:
            self.close()

    def _loop(self, max_seconds: float | None) -> TrainSummary:
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
                        self._check_parameters()  # every step would cost ~10%; a broken one breaks the loss anyway
                        metrics.write(self.step, self.train_seconds, self.optimizer.param_groups[0]["lr"])
                    if self.step % config.checkpoint_every == 0 or last:
                        self.save()
            if self.step >= config.steps and not self.analogy_fitted and config.analogy_steps > 0:
                self._fit_analogy(started)
        except KeyboardInterrupt as stop:
            stopped = Interrupted.of(stop)
            with _signals_ignored():  # a second Ctrl-C must not cut the last checkpoint short
                self.save()
            raise Interrupted(stopped.signum, f"{stopped.how} at step {self.step}; checkpoint written, continue with --resume") from None
        except NonFinite as broken:
            raise UserError(self._non_finite_message(broken)) from None
        if self.step % config.checkpoint_every != 0 and self.step != config.steps:
            self.save()  # stopped by the time budget
        return TrainSummary(self.run_dir, self.step, self.train_seconds, self.step >= config.steps, dict(self.running_psnr))

    def _fit_analogy(self, started: float) -> None:
        """The analogy fit of every desired style (fastjoint.analogy), then a checkpoint that records it."""
        styles = list(self.config.data.pairings.desired)
        steps = self.config.train.analogy_steps
        with console.status("[bold]The analogy fit...") as status:

            def progress(style: str, done: int, total: int) -> None:
                if done % 50 == 0 or done == total:
                    status.update(f"[bold]The analogy fit: {style}, step {done}/{total}...")

            tick = time.perf_counter()
            self.built.train(False)
            decoders = {style: self.model.decoders[style] for style in styles}
            fitted = fit_styles(self.built, decoders, self.originals, steps, self.config.train.seed, progress)
            self.built.train(True)
            self._check_parameters()
        self.analogy_fitted = True
        self.train_seconds = time.perf_counter() - started
        self.save()
        if fitted:
            console.print(f"analogy fit: {', '.join(styles)} ({steps} steps each) in {time.perf_counter() - tick:.1f} s")
        else:
            console.print("analogy fit: skipped, no surface of the reference or the target is seen yet; the decoders stay as trained")

    def _non_finite_message(self, broken: NonFinite) -> str:
        lr_key = self.architecture.lr_key
        section, key = lr_key.split(".")
        lr = getattr(getattr(self.config, section), key)
        kept = (
            f"the last good checkpoint (step {self.saved_step}) is kept; --resume with a lower {lr_key} continues from it"
            if self.saved_step is not None
            else f"no checkpoint was written; train again with a lower {lr_key}"
        )
        return f"{lr_key}: training diverged at step {broken.step} ({broken.what}); the learning rate ({lr:g}) is likely too high; {kept}"


def adapted_rays(rays: int, samples: int, target: int) -> int:
    """The next batch's ray count: scaled so that it holds about `target` samples at this batch's samples per ray."""
    scaled = round(rays * target / max(samples, 1))
    return max(MIN_BATCH_RAYS, min(target, scaled))


def cover_term(target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor | None:  # [N, D], [M, D] -> scalar
    """The mean squared distance from each target feature to the nearest reference feature; the reference's
    are held fixed (they are the ones both styles' photos pin down). None when either has fewer than
    COVER_MIN_POINTS features (a batch that barely sees a surface)."""
    if target.shape[0] < COVER_MIN_POINTS or reference.shape[0] < COVER_MIN_POINTS:
        return None
    return torch.cdist(target, reference.detach()).min(dim=1).values.square().mean()


def feature_saturation(logits: torch.Tensor) -> torch.Tensor:  # [N, D] -> scalar
    """How far the style features' logits (before their tanh) lie beyond +-FEATURE_BOUND: the mean over the points
    of the squared excess, summed over the axes. Zero inside the bound, where the tanh still passes gradient."""
    return torch.relu(logits.abs() - FEATURE_BOUND).square().sum(dim=1).mean()


def plane_points(dim: int, generator: torch.Generator, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """SMOOTH_POINTS random points of the feature plane [-1, 1]^dim, and a random step of length SMOOTH_STEP from each."""
    points = torch.rand(SMOOTH_POINTS, dim, generator=generator) * 2 - 1
    steps = torch.randn(SMOOTH_POINTS, dim, generator=generator)
    return points.to(device), (SMOOTH_STEP * steps / steps.norm(dim=1, keepdim=True)).to(device)


def style_roughness(model: torch.nn.Module, styles: Sequence[str], points: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The mean squared rate at which each style's change of colour (its decoder minus the original's, which is
    held fixed and decoded once) varies across the feature plane, summed over `styles`: a finite difference along
    `steps` [N, dim] at `points` [N, dim]."""
    both, n = model.on_plane(torch.cat([points, points + steps])), points.shape[0]
    with torch.no_grad():
        original = model.decode(ORIGINAL, both)
    length = steps.square().sum(dim=1)
    rates = []
    for style in styles:
        change = model.decode(style, both) - original
        rates.append(((change[n:] - change[:n]).square().sum(dim=1) / length).mean())
    return torch.stack(rates).sum()


class NonFinite(Exception):
    """Training produced NaN or infinity at `step`; `what` says where (a loss, a parameter)."""

    def __init__(self, what: str, step: int) -> None:
        super().__init__(f"{what} at step {step}")
        self.what = what
        self.step = step


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignores Ctrl-C and SIGTERM inside (main thread only; elsewhere signals do not reach Python)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def train(config: Config, resume: bool = False, max_seconds: float | None = None, check_test: bool = True) -> TrainSummary:
    """Trains (or resumes) the run of `config`; see `Trainer`."""
    return Trainer(config, resume=resume, check_test=check_test).run(max_seconds=max_seconds)
