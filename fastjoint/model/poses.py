"""Learned corrections of camera poses: a rotation and a shift per view.

`fastjoint eval --align-poses` (fastjoint.align) uses them to align each held-out view to its
photo with the scene held fixed before it is scored. A correction is six numbers: a rotation
(axis times angle, radians) about the camera's centre, in world axes, and a shift of the
centre (world units). Both start at zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def so3_exp(omega: Tensor) -> Tensor:  # [n, 3] axis * angle -> [n, 3, 3]
    """Rotation matrices of axis-angle vectors (Rodrigues' formula; its series near zero)."""
    theta2 = (omega * omega).sum(-1)[:, None, None]
    small = theta2 < 1e-8
    theta = theta2.clamp_min(1e-8).sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-8))
    zero = torch.zeros_like(omega[:, 0])
    x, y, z = omega.unbind(-1)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + a * k + b * (k @ k)


class PoseCorrection(nn.Module):
    """The learned corrections of `n` views' poses (`corrections` [n, 6], zero at first)."""

    def __init__(self, n: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.corrections = nn.Parameter(torch.zeros(n, 6, device=device))

    def forward(self, poses: Tensor, view: Tensor) -> Tensor:  # [k, 4, 4], [k] -> [k, 4, 4]
        """`poses` (of the views `view`) with their views' corrections applied."""
        return corrected(poses, self.corrections[view])

    @torch.no_grad()
    def sizes(self) -> tuple[Tensor, Tensor]:  # [n] degrees, [n] world units
        """Each view's correction: its rotation angle in degrees and its shift."""
        return torch.rad2deg(self.corrections[:, :3].norm(dim=1)), self.corrections[:, 3:].norm(dim=1)


def corrected(poses: Tensor, correction: Tensor) -> Tensor:  # [k, 4, 4], [k, 6] -> [k, 4, 4]
    """Each pose with its own correction applied (a rotation about its centre, then a shift)."""
    rotation = so3_exp(correction[:, :3]) @ poses[:, :3, :3]
    centre = poses[:, :3, 3] + correction[:, 3:]
    top = torch.cat([rotation, centre[:, :, None]], dim=2)
    return torch.cat([top, poses[:, 3:, :]], dim=1)
