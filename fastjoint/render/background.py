"""Learned backgrounds: what a ray shows at infinity where the scene leaves it transparent.

A dataset's background is a colour, `random`, `learned` or `auto` (fastjoint.colours parses
and resolves the setting). `learned` is an environment map, a function of the ray's direction
alone (the backdrop seen at infinity: a sky, a distant room), trained with the pairing, for
opaque photographs.

The environment map is a pyramid of equirectangular RGB textures, looked up bilinearly and
summed before a sigmoid: the coarse levels learn the broad gradient from every ray at
once, the fine ones (up to 128 x 256 texels, about 1.4 degrees) the detail of clouds, which a
low-order function of direction (spherical harmonics) cannot draw.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def direction_uv(dirs: Tensor) -> Tensor:  # [N, 3] unit -> [N, 2] in [0, 1]
    """Equirectangular coordinates of unit directions, z up: u the azimuth, v from the zenith."""
    x, y, z = dirs.unbind(-1)
    u = torch.atan2(y, x) * (0.5 / math.pi) + 0.5
    v = torch.acos(z.clamp(-1.0, 1.0)) * (1.0 / math.pi)
    return torch.stack([u, v], dim=-1)


def bilinear_wrapped(texture: Tensor, uv: Tensor) -> Tensor:  # [H, W, C], [N, 2] -> [N, C]
    """Bilinear lookup at texel centres, wrapping around in u (azimuth) and clamped in v."""
    height, width, channels = texture.shape
    x = uv[:, 0] * width - 0.5
    y = (uv[:, 1] * height - 0.5).clamp(0.0, height - 1.0)
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0 = x0.long() % width
    x1 = (x0 + 1) % width
    y0 = y0.long().clamp(0, height - 1)
    y1 = (y0 + 1).clamp(max=height - 1)
    flat = texture.reshape(-1, channels)

    def at(row: Tensor, col: Tensor) -> Tensor:
        return flat.index_select(0, row * width + col)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


class EnvironmentMap(nn.Module):
    """A learned background: RGB as a function of the ray's direction (seen at infinity).

    Args:
        levels: textures in the pyramid; level l has `base_height * 2^l` x twice that texels.
        base_height: rows of the coarsest texture.
    """

    def __init__(self, levels: int = 5, base_height: int = 8) -> None:
        super().__init__()
        # Zeros: grey at first, and no draw from the random generators, so adding a learned
        # background leaves every other random choice of a run unchanged.
        self.textures = nn.ParameterList(
            nn.Parameter(torch.zeros(base_height * 2**level, base_height * 2 ** (level + 1), 3)) for level in range(levels)
        )

    def forward(self, dirs: Tensor) -> Tensor:  # [N, 3] unit -> [N, 3] in (0, 1)
        uv = direction_uv(dirs)
        logits = sum(bilinear_wrapped(texture, uv) for texture in self.textures)
        return torch.sigmoid(logits)
