"""A new style for a trained run: one decoder, trained against the run's frozen encoders.

The encoders, the feature head and the occupancy grids stay as trained, so where each
reference ray's colour comes from (the compositing weights of its samples) and each
sample's style feature (and the normal, where the decoders read it) never change. Both are
computed once, for a fixed random set of the reference's training pixels (`SampleCache`); each
step then decodes the cached inputs of a batch of rays and composites them with the cached
weights: a few thousand evaluations of a 5 -> 32 -> 3 network (2 -> 32 -> 3 without normals).
The decoder starts from the run's `original` decoder, so feature regions the new photos never
show keep their original colour.

The decoder is then fitted to the analogy as `train` fits its styles' (fastjoint.analogy; the run's
`train.analogy_steps`, or `--analogy-steps`), written to RUN/styles/<name>.pt (the checkpoint is
never touched), and the transfer target:<name> is scored against ground truth when given and rendered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from fastjoint.analogy import fit_styles
from fastjoint.data import Split, pixel_rays
from fastjoint.datasets import load_scene_split
from fastjoint.metrics import psnr_from_mse
from fastjoint.pairing import ORIGINAL, SCENES, Pairing
from fastjoint.render import SampleCache, composite_cached, ray_offsets, select_rays
from fastjoint.run import LoadedRun, load_run
from fastjoint.scoring import TransferScores, check_same_views, load_test_views, score_transfer
from fastjoint.styles import StoredStyle, save_style

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class RestyleSettings:
    """How a new decoder is fitted."""

    steps: int = 200
    """Optimisation steps of the decoder."""
    rays: int = 65536
    """Training pixels of the reference whose samples are cached (all of them if fewer)."""
    batch: int = 2048
    """Rays per step, drawn from the cached ones."""
    lr: float = 1e-2
    """Learning rate of Adam."""
    seed: int = 0
    """Seed of the choice of pixels, batches and backgrounds."""
    analogy_steps: int | None = None
    """Steps of the analogy fit of the new decoder (fastjoint.analogy); None: the run's train.analogy_steps; 0: off."""


class RestyleResult(NamedTuple):
    path: Path  # RUN/styles/<name>.pt
    style: StoredStyle
    cached_rays: int
    cached_samples: int
    cache_seconds: float
    train_seconds: float
    train_psnr: float  # on the cached rays, on the render background
    transfer: TransferScores | None  # against --target-truth, when given
    run: LoadedRun  # the run with the new style


def cache_reference(run: LoadedRun, split: Split, n_rays: int, generator: torch.Generator) -> tuple[SampleCache, Tensor]:
    """The sample cache of `n_rays` random training pixels of the reference, and their RGBA [n, 4]."""
    device = run.built.device
    count, height, width = split.images.shape[:3]
    total = count * height * width
    pixels = torch.randperm(total, generator=generator)[:n_rays] if n_rays < total else torch.arange(total)
    pixels = pixels.sort().values  # view by view: rays of one view march alike
    image, rest = pixels // (height * width), pixels % (height * width)
    row, col = rest // width, rest % width
    rays_o, rays_d = pixel_rays(split.poses[image], col.float() + 0.5, row.float() + 0.5, split.camera)
    cache = run.built.cache_samples("reference", rays_o.to(device), rays_d.to(device))
    return cache, split.images[image, row, col].to(device)


def fit_decoder(
    run: LoadedRun,
    cache: SampleCache,
    rgba: Tensor,  # [n_rays, 4] straight alpha
    settings: RestyleSettings,
    generator: torch.Generator,
    progress: Progress | None = None,
) -> tuple[torch.nn.Module, float]:
    """A new decoder fitted to the cached rays' colours; returns it and its PSNR on them."""
    model, device = run.built.model, run.built.device
    decoder = model.decoder_from_original()  # on the model's device
    optimizer = torch.optim.Adam(decoder.parameters(), lr=settings.lr, betas=(0.9, 0.99))
    offsets = ray_offsets(cache)
    batch = min(settings.batch, cache.n_rays)
    for step in range(settings.steps):
        rays = torch.randint(cache.n_rays, (batch,), generator=generator).to(device)
        part = select_rays(cache, rays, offsets)
        # A random background per ray, as in training, so that alpha mismatches average out.
        background = torch.rand(batch, 3, generator=generator).to(device)
        alpha = rgba[rays, 3:]
        target = rgba[rays, :3] * alpha + background * (1.0 - alpha)
        loss = torch.nn.functional.mse_loss(composite_cached(part, decoder(part.features), background), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress("train", step + 1, settings.steps)
    decoder.train(False)
    with torch.no_grad():
        background = torch.tensor(run.config.render.background, device=device)
        alpha = rgba[:, 3:]
        target = rgba[:, :3] * alpha + background * (1.0 - alpha)
        mse = torch.mean((composite_cached(cache, decoder(cache.features), background) - target) ** 2).item()
    return decoder, psnr_from_mse(mse)


def restyle(
    run_dir: str | Path,
    name: str,
    reference: str | Path,
    target_truth: str | Path | None = None,
    force: bool = False,
    settings: RestyleSettings = RestyleSettings(),
    device: str | None = None,
    progress: Progress | None = None,
) -> RestyleResult:
    """Adds the style `name` to a trained run from the reference's photos in it (a dataset folder).

    Writes RUN/styles/<name>.pt; scores target:<name> against `target_truth` (a dataset of
    the target in that style, seen from the target's test cameras) when given.
    """
    run = load_run(run_dir, device)
    run.check_new_style(name, force)
    reference = Path(reference)
    split = load_scene_split(run.config.data, "reference", reference, "train")
    truth = None
    if target_truth is not None:  # checked before any work
        truth = load_test_views(run, Path(target_truth), "target")
        original = load_test_views(run, run.dataset(Pairing("target", ORIGINAL)), "target")
        check_same_views(truth, original)

    generator = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    if progress is not None:
        progress("cache", 0, 1)
    cache, rgba = cache_reference(run, split, settings.rays, generator)
    cached = time.perf_counter()
    decoder, train_psnr = fit_decoder(run, cache, rgba, settings, generator, progress)
    analogy_steps = run.config.train.analogy_steps if settings.analogy_steps is None else settings.analogy_steps
    if analogy_steps > 0:
        originals = {scene: load_scene_split(run.config.data, scene, run.dataset(Pairing(scene, ORIGINAL)), "train") for scene in SCENES}

        def fitting(style: str, done: int, total: int) -> None:
            if progress is not None:
                progress("analogy", done, total)

        if not fit_styles(run.built, {name: decoder}, originals, analogy_steps, settings.seed, fitting):
            analogy_steps = 0  # no surface seen: the decoder stays as fitted to the photos
    trained = time.perf_counter()
    info = {
        "steps": settings.steps,
        "rays": cache.n_rays,
        "batch": settings.batch,
        "lr": settings.lr,
        "analogy_steps": analogy_steps,
        "seconds": round(trained - started, 3),
        "train_psnr": train_psnr,
        "run_step": run.step,
    }
    style = StoredStyle(
        name=name,
        decoder=decoder.state_dict(),
        reference=str(reference.resolve()),
        target=str(Path(target_truth).resolve()) if target_truth is not None else "",
        origin="restyle",
        info=info,
    )
    path = save_style(run.run_dir, style)
    run = run.with_style(style)
    transfer = None
    if truth is not None:
        if progress is not None:
            progress("eval", 0, 1)
        transfer = score_transfer(run, Pairing("target", name), truth, original)
        style = StoredStyle(**{**style.__dict__, "info": {**info, "transfer": {**transfer._asdict(), "gain_db": transfer.gain_db}}})
        save_style(run.run_dir, style)
        run = run._replace(stored={**run.stored, name: style})
    return RestyleResult(path, style, cache.n_rays, cache.n_samples, cached - started, trained - cached, train_psnr, transfer, run)
