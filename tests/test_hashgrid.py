"""The torch hash-grid encoding against a slow, direct transcription of tiny-cuda-nn's rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastjoint.ops import grid_layout, hashgrid_encode
from fastjoint.ops._torch_impl import GridLayout


def direct_encode(x: np.ndarray, table: np.ndarray, layout: GridLayout) -> tuple[np.ndarray, list]:
    """Point by point, level by level, vertex by vertex, as tiny-cuda-nn's kernel does it.

    Returns the encoding and, for the gradient test, every (point, level, row, weight).
    """
    n_features = table.shape[1]
    out = np.zeros((len(x), layout.n_levels * n_features), dtype=np.float64)
    contributions = []
    for n, point in enumerate(x.astype(np.float32)):
        for level in range(layout.n_levels):
            pos = point * np.float32(layout.scales[level]) + np.float32(0.5)
            grid = np.floor(pos)
            frac = pos - grid
            size, res = layout.sizes[level], layout.resolutions[level]
            for corner in range(8):
                weight = 1.0
                vertex = []
                for d in range(3):
                    high = (corner >> d) & 1
                    weight *= float(frac[d]) if high else 1.0 - float(frac[d])
                    vertex.append(int(grid[d]) + high)
                # tiny-cuda-nn's grid_index: dense while the strides fit, else the prime hash.
                stride, index, d = 1, 0, 0
                while d < 3 and stride <= size:
                    index += vertex[d] * stride
                    stride *= res
                    d += 1
                if size < stride:
                    index = (vertex[0] * 1) ^ (vertex[1] * 2654435761) ^ (vertex[2] * 805459861)
                    index &= 0xFFFFFFFF
                row = layout.offsets[level] + index % size
                out[n, level * n_features : (level + 1) * n_features] += weight * table[row]
                contributions.append((n, level, row, weight))
    return out, contributions


def test_layout_matches_hand_computed_levels():
    # base 16, scale 2, table 2^12: 16^3 = 4096 fits (dense), 32^3 and 64^3 hash.
    layout = grid_layout(3, 12, 16, 2.0)
    assert layout.scales == (15.0, 31.0, 63.0)
    assert layout.resolutions == (16, 32, 64)
    assert layout.sizes == (4096, 4096, 4096)
    assert layout.hashed == (False, True, True)
    assert layout.offsets == (0, 4096, 8192)
    # A fractional scale rounds the resolution up; dense sizes round up to a multiple of 8.
    layout = grid_layout(2, 10, 5, 1.5)
    assert layout.scales[1] == pytest.approx(6.5)
    assert layout.resolutions == (5, 8)
    assert layout.sizes == (128, 512)
    assert layout.hashed == (False, False)


@pytest.mark.parametrize("levels, log2_size, base, max_res", [(4, 10, 4, 32), (6, 12, 8, 128)])
def test_encoding_matches_direct_transcription(levels, log2_size, base, max_res):
    generator = torch.Generator().manual_seed(levels)
    layout = grid_layout(levels, log2_size, base, math.exp(math.log(max_res / base) / (levels - 1)))
    assert any(layout.hashed) and not all(layout.hashed)  # both kinds of level are exercised
    table = torch.rand(layout.n_params, 2, generator=generator) * 2 - 1
    x = torch.rand(64, 3, generator=generator)
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0]])  # box corners
    ours = hashgrid_encode(x, table, layout)
    expected, _ = direct_encode(x.numpy(), table.numpy().astype(np.float64), layout)
    torch.testing.assert_close(ours.double(), torch.from_numpy(expected), rtol=1e-5, atol=1e-5)


def test_gradient_scatters_weights_into_the_table():
    generator = torch.Generator().manual_seed(3)
    layout = grid_layout(4, 9, 4, 2.0)
    table = (torch.rand(layout.n_params, 2, generator=generator) - 0.5).requires_grad_()
    x = torch.rand(40, 3, generator=generator)
    out = hashgrid_encode(x, table, layout)
    v_out = torch.randn(out.shape, generator=generator)
    (v_table,) = torch.autograd.grad(out, table, v_out)

    _, contributions = direct_encode(x.numpy(), table.detach().numpy(), layout)
    expected = np.zeros(tuple(table.shape))
    for n, level, row, weight in contributions:
        expected[row] += weight * v_out[n, level * 2 : level * 2 + 2].numpy()
    torch.testing.assert_close(v_table.double(), torch.from_numpy(expected), rtol=1e-5, atol=1e-6)


def test_rejects_points_of_the_wrong_shape():
    layout = grid_layout(2, 8, 4, 2.0)
    with pytest.raises(AssertionError, match=r"\[N, 3\]"):
        hashgrid_encode(torch.rand(5, 2), torch.zeros(layout.n_params, 2), layout)
