"""Per-image appearance: a colour transform per training photo, for captures whose exposure and
white balance change from frame to frame (a phone's automatic settings).

Each training image i of a pairing gets an affine colour transform, rgb -> (I + A_i) rgb + b_i,
applied to the composited pixel (the scene and its backdrop, as the camera saw both), with
A_i and b_i starting at zero. The scene itself is shared by every image, so the transforms can
only take up what changes from one photo to the next as a whole. Renders and evaluation, whose
views have no code of their own, use the mean transform over the training images (nerfacto
renders its test views at the mean appearance code likewise).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ImageColours(nn.Module):
    """An affine colour transform per training image of one pairing."""

    def __init__(self, n_images: int) -> None:
        super().__init__()
        self.matrices = nn.Parameter(torch.zeros(n_images, 3, 3))
        self.offsets = nn.Parameter(torch.zeros(n_images, 3))

    def forward(self, rgb: Tensor, images: Tensor) -> Tensor:  # [n, 3], [n] int64 -> [n, 3]
        return rgb + torch.einsum("nij,nj->ni", self.matrices[images], rgb) + self.offsets[images]

    def mean(self, rgb: Tensor) -> Tensor:  # [n, 3] -> [n, 3]: the mean transform (views without a code)
        return rgb + rgb @ self.matrices.mean(dim=0).T + self.offsets.mean(dim=0)
