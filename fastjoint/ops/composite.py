"""Compositing packed samples into pixels: input checks and backend dispatch.

Backends: `torch` (the reference, `_torch_impl._composite`) and `fused`, the native kernel
of cuda_ext (`torch.ops.fastjoint.composite_forward` / `composite_backward`), which walks
each ray once forward and once backward and stores no per-sample transmittance. Its
autograd and fake-tensor rules are registered here, from Python, when the library loads.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastjoint.ops._torch_impl import CompositeResult, _composite

__all__ = ["CompositeResult", "composite"]

# The native ops this module registers rules for (see fastjoint.ops.native.OP_MODULES).
NATIVE_OPS = ("fastjoint::ray_offsets", "fastjoint::composite_forward", "fastjoint::composite_backward")


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

    Args:
        sigmas: densities of the samples.
        rgbs: colours of the samples.
        t_starts, t_ends: the samples' intervals along their rays (the fused backend does
            not differentiate them).
        ray_indices: the ray of each sample, sorted (int32 or int64).
        n_rays: number of rays; rays without samples give zeros.
        backend: "torch" (reference) or "fused" (cuda_ext; see fastjoint.ops.native).

    Returns:
        CompositeResult(rgb [n_rays, 3], opacity [n_rays], depth [n_rays]).
    """
    n = sigmas.shape[0]
    assert sigmas.shape == (n,) and rgbs.shape == (n, 3), (
        f"sigmas [S] and rgbs [S, 3] expected, got {tuple(sigmas.shape)}, {tuple(rgbs.shape)}"
    )
    assert t_starts.shape == t_ends.shape == ray_indices.shape == (n,), "t_starts, t_ends, ray_indices must be [S]"
    assert not ray_indices.dtype.is_floating_point, f"ray_indices must be integers, got {ray_indices.dtype}"
    if backend == "torch":
        return _composite(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays)
    if backend == "fused":
        assert not (t_starts.requires_grad or t_ends.requires_grad), "the fused composite does not differentiate t"
        dtype = sigmas.dtype
        rgb, opacity, depth = torch.ops.fastjoint.composite_forward(
            sigmas.contiguous(),
            rgbs.to(dtype).contiguous(),
            t_starts.to(dtype).contiguous(),
            t_ends.to(dtype).contiguous(),
            torch.ops.fastjoint.ray_offsets(ray_indices.contiguous(), n_rays),
        )
        return CompositeResult(rgb, opacity, depth)
    raise ValueError(f"unknown composite backend {backend!r}")


def _setup_context(ctx, inputs, output) -> None:
    sigmas, rgbs, t_starts, t_ends, offsets = inputs
    ctx.save_for_backward(sigmas, rgbs, t_starts, t_ends, offsets, *output)


def _backward(ctx, v_rgb: Tensor, v_opacity: Tensor, v_depth: Tensor):
    sigmas, rgbs, t_starts, t_ends, offsets, rgb, opacity, depth = ctx.saved_tensors
    # An output that took no part in the loss arrives as None (or zeros); zeros keep one path.
    v_rgb, v_opacity, v_depth = (
        torch.zeros_like(out) if v is None else v.contiguous() for v, out in ((v_rgb, rgb), (v_opacity, opacity), (v_depth, depth))
    )
    v_sigmas, v_rgbs = torch.ops.fastjoint.composite_backward(
        v_rgb, v_opacity, v_depth, rgb, opacity, depth, sigmas, rgbs, t_starts, t_ends, offsets
    )
    return v_sigmas, v_rgbs, None, None, None


def _fake_forward(sigmas, rgbs, t_starts, t_ends, offsets):
    n_rays = offsets.shape[0] - 1
    return sigmas.new_empty(n_rays, 3), sigmas.new_empty(n_rays), sigmas.new_empty(n_rays)


def _fake_ray_offsets(ray_indices, n_rays):
    return ray_indices.new_empty(n_rays + 1, dtype=torch.int64)


def _fake_backward(v_rgb, v_opacity, v_depth, rgb, opacity, depth, sigmas, rgbs, t_starts, t_ends, offsets):
    return torch.empty_like(sigmas), torch.empty_like(rgbs)


_registered = False


def register_native() -> None:
    """Registers autograd and fake-tensor rules of the native ops (once, after loading)."""
    global _registered
    if _registered:
        return
    torch.library.register_fake("fastjoint::ray_offsets")(_fake_ray_offsets)
    torch.library.register_fake("fastjoint::composite_forward")(_fake_forward)
    torch.library.register_fake("fastjoint::composite_backward")(_fake_backward)
    torch.library.register_autograd("fastjoint::composite_forward", _backward, setup_context=_setup_context)
    _registered = True
