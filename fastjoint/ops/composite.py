"""Compositing packed samples into pixels: input checks and backend dispatch."""

from __future__ import annotations

import torch
from torch import Tensor

from fastjoint.ops._torch_impl import CompositeResult, _composite

__all__ = ["CompositeResult", "composite"]


def composite(
    sigmas: Tensor,  # [S]
    rgbs: Tensor,  # [S, 3]
    t_starts: Tensor,  # [S]
    t_ends: Tensor,  # [S]
    ray_indices: Tensor,  # [S] int32 or int64, sorted
    n_rays: int,
    backend: str = "torch",
) -> CompositeResult:
    """Colour, opacity and expected depth per ray; differentiable in sigmas and rgbs.

    The caller blends the background: `rgb + (1 - opacity)[:, None] * background`.
    """
    n = sigmas.shape[0]
    assert sigmas.shape == (n,) and rgbs.shape == (n, 3), f"sigmas [S] and rgbs [S, 3] expected, got {tuple(sigmas.shape)}, {tuple(rgbs.shape)}"
    assert t_starts.shape == t_ends.shape == ray_indices.shape == (n,), "t_starts, t_ends, ray_indices must be [S]"
    assert not ray_indices.dtype.is_floating_point, f"ray_indices must be integers, got {ray_indices.dtype}"
    if backend == "torch":
        return _composite(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays)
    raise ValueError(f"unknown composite backend {backend!r}")
