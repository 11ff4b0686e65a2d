"""The multiresolution hash-grid encoding: layout, input checks and backend dispatch."""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from fastjoint.ops._torch_impl import GridLayout, _hashgrid_encode

__all__ = ["GridLayout", "grid_layout", "hashgrid_encode"]


def grid_layout(
    n_levels: int, log2_table_size: int, base_resolution: int, per_level_scale: float
) -> GridLayout:
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
    """Encodes points with a hash grid; differentiable in `table`."""
    assert x.dim() == 2 and x.shape[1] == 3, f"x must be [N, 3], got {tuple(x.shape)}"
    assert table.dim() == 2 and table.shape[0] == layout.n_params, (
        f"table must be [{layout.n_params}, F], got {tuple(table.shape)}"
    )
    assert x.device == table.device, f"x on {x.device} but table on {table.device}"
    if backend == "torch":
        return _hashgrid_encode(x, table, layout)
    raise ValueError(f"unknown grid backend {backend!r}")
