"""Scoring a run's renders against a dataset's test views: the views, what they are scored on,
and a transfer against its ground truth beside the no-transfer baseline (the target in its
original style scored against that style's ground truth, i.e. what doing nothing would
score). `eval` and `restyle` score with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from fastjoint.data import Split
from fastjoint.datasets import load_scene_split
from fastjoint.errors import UserError
from fastjoint.metrics import score
from fastjoint.pairing import Pairing
from fastjoint.run import LoadedRun


class TransferScores(NamedTuple):
    """A transfer scored against its ground truth, beside the no-transfer baseline."""

    psnr: float
    ssim: float
    views: int
    baseline_psnr: float  # the target's original style scored against the style's ground truth
    baseline_ssim: float

    @property
    def gain_db(self) -> float:
        return self.psnr - self.baseline_psnr


def load_test_views(run: LoadedRun, dataset: Path, scene: str) -> Split:
    """The test views of one of a scene's datasets, at that scene's downscale."""
    return load_scene_split(run.config.data, scene, dataset, "test")


def backdrop(run: LoadedRun, pairing: Pairing, split: Split, background: Tensor | None = None) -> Tensor:
    """What a pairing's views are scored on: `background` [3] when given, else the pairing's own
    backdrop, a colour [3] or, for a learned background, one image per view [n_views, H, W, 3]."""
    if background is not None:
        return background
    colour = run.built.backdrop_colour(pairing)
    if colour is not None:
        return colour.cpu()
    return torch.stack([run.built.backdrop_image(pairing, pose, split.camera) for pose in split.poses])


def score_transfer(
    run: LoadedRun, pairing: Pairing, truth: Split, original: Split | None = None, background: Tensor | None = None
) -> TransferScores:
    """A transfer target:<style> scored against its ground truth's test views, with the no-transfer baseline.

    Args:
        run: the run that renders the transfer.
        pairing: the transfer.
        truth: the ground truth's test views.
        original: the target's original-style test views (read from the run's data when None).
        background: [3] render and compose on this colour; None: the transfer's own backdrop.
    """
    original = original or load_test_views(run, run.dataset(run.pairings.trained[0]), "target")
    check_same_views(truth, original)
    behind = backdrop(run, pairing, truth, background)
    scores = score(run.render(pairing, truth.poses, truth.camera, background), truth.on_background(behind))
    baseline = score(list(original.on_background(behind)), truth.on_background(behind))
    return TransferScores(*scores, baseline.psnr, baseline.ssim)


def check_same_views(truth: Split, original: Split) -> None:
    """The baseline compares view for view, so both test splits must share their cameras."""
    if len(truth) != len(original) or not torch.allclose(truth.poses, original.poses, atol=1e-4):
        raise UserError(
            f"{truth.source}: its test views differ from those of {original.source}; "
            "the transfer's ground truth must be photographed from the target's test cameras"
        )
    if truth.camera != original.camera:
        raise UserError(f"{truth.source}: its camera differs from that of {original.source}")
