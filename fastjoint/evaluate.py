"""Metrics (PSNR, SSIM) and the evaluation of a run on its test views: eval.json.

For the transfer `target:desired`, when the data has its ground truth, eval.json also
holds the no-transfer baseline: the target in its original style scored against the
desired style's ground truth, i.e. what doing nothing would score.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fastjoint.data import Split, load_split
from fastjoint.errors import UserError
from fastjoint.log import console
from fastjoint.pairing import TRAINED, TRANSFER, Pairing
from fastjoint.render import render_image
from fastjoint.run import LoadedRun, dataset_path, load_run, pairing_field


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (any shape)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: Tensor, b: Tensor) -> float:
    """Structural similarity of two [H, W, C] images in [0, 1].

    Wang et al. (2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data
    range 1, over the valid region, averaged over pixels and channels.
    """
    assert a.shape == b.shape and a.dim() == 3, f"two [H, W, C] images expected, got {tuple(a.shape)}, {tuple(b.shape)}"
    c1, c2 = 0.01**2, 0.03**2
    channels = a.shape[2]
    window = _gaussian_window().to(a.device)[None, None].expand(channels, 1, 11, 11)
    x = a.double().permute(2, 0, 1)[None]
    y = b.double().permute(2, 0, 1)[None]

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean().item()


class Scores(NamedTuple):
    psnr: float
    ssim: float
    views: int


def score(predictions: list[Tensor], truths: Tensor) -> Scores:
    """Mean PSNR and SSIM over views."""
    p = [psnr(x, y) for x, y in zip(predictions, truths)]
    s = [ssim(x, y) for x, y in zip(predictions, truths)]
    return Scores(sum(p) / len(p), sum(s) / len(s), len(p))


def render_split(run: LoadedRun, pairing: Pairing, split: Split) -> list[Tensor]:
    """The pairing rendered from every view of a split, [H, W, 3] each, on the CPU."""
    built, config = run.built, run.config
    background = torch.tensor(config.render.background, device=built.device)
    field = pairing_field(built.model, pairing)
    sampler = built.samplers[pairing.scene]
    return [
        render_image(field, sampler, pose.to(built.device), split.camera, background, config.render.chunk, built.backends.composite).cpu()
        for pose in split.poses
    ]


def evaluate(run_dir: str | Path, device: str | None = None, run: LoadedRun | None = None) -> dict:
    """Scores every trained pairing and the transfer on test views; writes RUN/eval.json."""
    run_dir = Path(run_dir)
    run = run or load_run(run_dir, device)
    config = run.config
    background = torch.tensor(config.render.background)
    downscale = config.data.downscale
    result: dict = {"step": run.step, "train_seconds": round(run.train_seconds, 2), "pairings": {}}

    with console.status("[bold]Evaluating on the test views...") as status:
        for pairing in TRAINED:
            status.update(f"[bold]Evaluating {pairing.name} on its test views...")
            split = load_split(dataset_path(config.data, pairing), "test", downscale)
            scores = score(render_split(run, pairing, split), split.on_background(background))
            result["pairings"][pairing.name] = scores._asdict()

        truth_path = dataset_path(config.data, TRANSFER)
        if truth_path is not None:
            status.update(f"[bold]Evaluating the transfer {TRANSFER.name} against its ground truth...")
            truth = load_split(truth_path, "test", downscale)
            original = load_split(dataset_path(config.data, TRAINED[0]), "test", downscale)
            _check_same_views(truth, original)
            scores = score(render_split(run, TRANSFER, truth), truth.on_background(background))
            baseline = score(list(original.on_background(background)), truth.on_background(background))
            result["transfer"] = {
                "pairing": TRANSFER.name,
                **scores._asdict(),
                "baseline_psnr": baseline.psnr,
                "baseline_ssim": baseline.ssim,
                "gain_db": scores.psnr - baseline.psnr,
            }
        else:
            result["transfer"] = None

    path = run_dir / "eval.json"
    partial = path.with_name("eval.json.partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(partial, path)
    return result


def _check_same_views(truth: Split, original: Split) -> None:
    """The baseline compares view for view, so both test splits must share their cameras."""
    if len(truth) != len(original) or not torch.allclose(truth.poses, original.poses, atol=1e-4):
        raise UserError(
            f"{truth.source}: its test views differ from those of {original.source}; "
            "the transfer's ground truth must be photographed from the target's test cameras"
        )
    if truth.camera != original.camera:
        raise UserError(f"{truth.source}: its camera differs from that of {original.source}")
