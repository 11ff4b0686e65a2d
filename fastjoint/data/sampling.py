"""Random training rays of a dataset."""

from __future__ import annotations

import torch
from torch import Tensor

from fastjoint.data.cameras import pixel_rays
from fastjoint.data.split import Split, to_float


class RaySampler:
    """Random training rays of one split: a random pixel of a random image per ray."""

    def __init__(self, split: Split, device: torch.device) -> None:
        self.split = split
        self.device = device
        self.pixels = split.pixels.to(device)  # uint8, made float per batch (see Split)
        self.poses = split.poses.to(device)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Ray origins [n, 3], directions [n, 3] and RGBA targets [n, 4]."""
        count, height, width = self.pixels.shape[:3]
        # Indices are drawn on the CPU generator so that runs repeat on any device.
        image = torch.randint(count, (n,), generator=generator).to(self.device)
        row = torch.randint(height, (n,), generator=generator).to(self.device)
        col = torch.randint(width, (n,), generator=generator).to(self.device)
        origins, dirs = pixel_rays(self.poses[image], col.float() + 0.5, row.float() + 0.5, self.split.camera)
        return origins, dirs, to_float(self.pixels[image, row, col])
