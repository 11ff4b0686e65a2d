"""The multiresolution hash-grid encoding: layout, input checks and backend dispatch.

Backends: `torch` (the reference, `_torch_impl._hashgrid_encode`) and `native`, the kernels
of cuda_ext (`torch.ops.fastjoint.hashgrid_forward` / `hashgrid_backward`): one pass per
point over every level forward; backward scatters into the table, on the CPU level by level
so that the sums run in one fixed order (deterministic whatever the threads), and, only when
the points need a gradient (aligning a view's pose, fastjoint.align), `hashgrid_backward_x`
gives theirs. Their autograd and fake-tensor rules are registered here, from Python, when the
library loads. tiny-cuda-nn (`backend.grid = "tcnn"`) is a module, not a function of the
table: see fastjoint.ops.tcnn.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from fastjoint.ops._torch_impl import GridLayout, _hashgrid_encode

__all__ = ["GridLayout", "grid_layout", "hashgrid_encode"]

# The native ops this module registers rules for (see fastjoint.ops.native.OP_MODULES).
NATIVE_OPS = ("fastjoint::hashgrid_forward", "fastjoint::hashgrid_backward", "fastjoint::hashgrid_backward_x")


def grid_layout(n_levels: int, log2_table_size: int, base_resolution: int, per_level_scale: float) -> GridLayout:
    """The per-level constants tiny-cuda-nn's HashGrid uses for these settings.

    Scales are computed in float32 as tiny-cuda-nn does (exp2f, log2f); a level is dense
    when its resolution^3 fits the table, its size then rounded up to a multiple of 8.
    """
    table = 1 << log2_table_size
    log2_scale = np.log2(np.float32(per_level_scale))
    scales, resolutions, sizes, offsets, hashed = [], [], [], [], []
    offset = 0
    for level in range(n_levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_scale) * np.float32(base_resolution) - np.float32(1.0))
        resolution = int(math.ceil(float(scale))) + 1
        dense = resolution**3
        size = min(((dense + 7) // 8) * 8, table)
        scales.append(float(scale))
        resolutions.append(resolution)
        sizes.append(size)
        offsets.append(offset)
        hashed.append(dense > size)
        offset += size
    return GridLayout(tuple(scales), tuple(resolutions), tuple(sizes), tuple(offsets), tuple(hashed))


def hashgrid_encode(
    x: Tensor,  # [N, 3] in [0, 1]^3
    table: Tensor,  # [n_params, F]
    layout: GridLayout,
    backend: str = "torch",
) -> Tensor:  # [N, n_levels * F]
    """Encodes points with a hash grid; differentiable in `table` and in `x` (the trilinear
    weights' derivative: zero across a cell border, where the encoding has a kink).

    Args:
        x: points, normalised to the grid's box (computed in float32 whatever their dtype).
        table: every level's rows, level after level (`layout.offsets`).
        layout: the per-level constants, from `grid_layout`.
        backend: "torch" (reference) or "native" (cuda_ext; see fastjoint.ops.native).

    Returns:
        The F features of every level, level-major, in the table's dtype.
    """
    assert x.dim() == 2 and x.shape[1] == 3, f"x must be [N, 3], got {tuple(x.shape)}"
    assert table.dim() == 2 and table.shape[0] == layout.n_params, f"table must be [{layout.n_params}, F], got {tuple(table.shape)}"
    assert x.device == table.device, f"x on {x.device} but table on {table.device}"
    if backend == "torch":
        return _hashgrid_encode(x, table, layout)
    if backend == "native":
        return torch.ops.fastjoint.hashgrid_forward(x.float().contiguous(), table.contiguous(), *_layout_lists(layout))
    raise ValueError(f"unknown grid backend {backend!r}")


def _layout_lists(layout: GridLayout) -> tuple[list[float], list[int], list[int], list[int], list[int]]:
    """The layout as the native ops' arguments: scales, resolutions, sizes, offsets, hashed (0/1)."""
    return (
        list(layout.scales),
        list(layout.resolutions),
        list(layout.sizes),
        list(layout.offsets),
        [int(h) for h in layout.hashed],
    )


def _setup_context(ctx, inputs, output) -> None:
    x, table, *lists = inputs
    ctx.save_for_backward(x, table if ctx.needs_input_grad[0] else None)
    ctx.lists = lists


def _backward(ctx, v_encoded: Tensor):
    x, table = ctx.saved_tensors
    v_encoded = v_encoded.contiguous()
    v_table = torch.ops.fastjoint.hashgrid_backward(v_encoded, x, *ctx.lists) if ctx.needs_input_grad[1] else None
    v_x = None
    if ctx.needs_input_grad[0]:
        v_x = torch.ops.fastjoint.hashgrid_backward_x(v_encoded, x, table, *ctx.lists).to(x.dtype)  # (in the table's dtype)
    return v_x, v_table, None, None, None, None, None


def _fake_forward(x, table, scales, resolutions, sizes, offsets, hashed):
    return table.new_empty(x.shape[0], len(scales) * table.shape[1])


def _fake_backward(v_encoded, x, scales, resolutions, sizes, offsets, hashed):
    return v_encoded.new_empty(sum(sizes), v_encoded.shape[1] // len(scales))


def _fake_backward_x(v_encoded, x, table, scales, resolutions, sizes, offsets, hashed):
    return table.new_empty(x.shape[0], 3)


_registered = False


def register_native() -> None:
    """Registers autograd and fake-tensor rules of the native ops (once, after loading)."""
    global _registered
    if _registered:
        return
    torch.library.register_fake("fastjoint::hashgrid_forward")(_fake_forward)
    torch.library.register_fake("fastjoint::hashgrid_backward")(_fake_backward)
    torch.library.register_fake("fastjoint::hashgrid_backward_x")(_fake_backward_x)
    torch.library.register_autograd("fastjoint::hashgrid_forward", _backward, setup_context=_setup_context)
    _registered = True
