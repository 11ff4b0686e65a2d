"""Feature alignment: a loss that pulls the two scenes' style features together.

The method hopes that the shared `original` decoder makes the target's and the reference's
encoders use one feature space; the research project measured how far they are from it (a
KL divergence between Gaussians fitted to each scene's features, which `analyze` reports)
and proposed, as future work, a loss on that gap. Both distances here compare the features
of the points where a training batch's rays hit a surface, one batch per scene:

- "moments": the squared distance between the two means plus the squared Frobenius distance
  between the two covariances (the Gaussians whose KL `analyze` reports);
- "sliced": a sliced Wasserstein distance: both point clouds projected on random directions,
  and the squared differences of their quantiles averaged.

Only the target moves: the reference's features enter as constants. They are the ones two
styles' photos pin down, and letting both move invites the trivial optimum, both scenes'
features collapsed onto one point (seen in a first trial with position-aware decoders).

Off by default (`train.align = "off"`): benchmarks/README.md says what it changes.
"""

from __future__ import annotations

import torch
from torch import Tensor

SURFACE_OPACITY = 0.5  # a training ray whose opacity passes this has hit a surface
MIN_POINTS = 8  # fewer surface points than this in either scene: no alignment term this step
SLICES = 32  # random directions of the sliced distance
QUANTILES = 32  # quantiles compared per direction


def moments_distance(a: Tensor, b: Tensor) -> Tensor:  # [N, D], [M, D] -> scalar
    """|mean_a - mean_b|^2 + |cov_a - cov_b|_F^2."""
    return (a.mean(dim=0) - b.mean(dim=0)).square().sum() + (torch.cov(a.T) - torch.cov(b.T)).square().sum()


def sliced_distance(a: Tensor, b: Tensor, generator: torch.Generator) -> Tensor:  # [N, D], [M, D] -> scalar
    """The squared sliced Wasserstein-2 distance, by quantiles on `SLICES` random unit directions."""
    directions = torch.randn(a.shape[1], SLICES, generator=generator).to(a.device, a.dtype)
    directions = directions / directions.norm(dim=0, keepdim=True)
    levels = (torch.arange(QUANTILES, device=a.device, dtype=a.dtype) + 0.5) / QUANTILES  # no extremes: outliers do not rule
    qa = torch.quantile(a @ directions, levels, dim=0)  # [Q, SLICES]
    qb = torch.quantile(b @ directions, levels, dim=0)
    return (qa - qb).square().mean()


def alignment_loss(kind: str, target: Tensor, reference: Tensor, generator: torch.Generator) -> Tensor | None:
    """The `kind` distance of the target's surface features from the reference's (held fixed), or None
    when either has too few points."""
    if target.shape[0] < MIN_POINTS or reference.shape[0] < MIN_POINTS:
        return None
    reference = reference.detach()
    if kind == "moments":
        return moments_distance(target, reference)
    if kind == "sliced":
        return sliced_distance(target, reference, generator)
    raise ValueError(f"unknown alignment {kind!r}")


def warmup_weight(weight: float, warmup_steps: int, step: int) -> float:
    """The alignment weight at `step`: rising linearly from 0 to `weight` over the warm-up."""
    return weight if warmup_steps == 0 else weight * min(1.0, step / warmup_steps)
