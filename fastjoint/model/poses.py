"""Camera pose refinement: a learned correction of each training photo's pose.

Poses estimated from the photos (COLMAP, `fastjoint process`) are off by a fraction of a
degree and of a percent, and a radiance field trained on photos that disagree blurs. As
nerfstudio's camera optimiser does, each training photo gets six parameters, trained with
the scene: a rotation (axis times angle, radians) about the camera's centre, in world axes,
and a shift of the centre (world units). Both start at zero.

The corrections cannot move the cameras together. Moving every camera by one similarity
(rotation, shift and scale of the whole set) would move the scene with them, away from the
held-out views, whose poses are not trained. So each step uses the corrections with that
part removed: their projection onto the 7 directions of a common similarity (to first order,
a rotation w gives every camera w and w x its centre, a shift gives every camera the shift,
and a scale s gives every camera s times its centre) is subtracted.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SIMILARITY_DOF = 7  # rotation 3, shift 3, scale 1


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


def similarity_basis(centres: Tensor) -> Tensor:  # [n, 3] -> [6 n, 7], orthonormal columns
    """The corrections that move every camera by one similarity, to first order: an orthonormal
    basis of the (rotation, shift) vectors of a common rotation, shift and scale."""
    n = centres.shape[0]
    columns = []
    for axis in range(3):  # rotation about a world axis: the same w for every camera, its centre moves by w x c
        w = torch.zeros(3, dtype=centres.dtype)
        w[axis] = 1.0
        columns.append(torch.cat([w.expand(n, 3), torch.linalg.cross(w.expand(n, 3), centres)], dim=1))
    for axis in range(3):  # a shift
        shift = torch.zeros(n, 6, dtype=centres.dtype)
        shift[:, 3 + axis] = 1.0
        columns.append(shift)
    columns.append(torch.cat([torch.zeros(n, 3, dtype=centres.dtype), centres], dim=1))  # a scale
    basis = torch.stack([c.reshape(-1) for c in columns], dim=1)  # [6 n, 7]
    q, r = torch.linalg.qr(basis)
    keep = r.diagonal().abs() > 1e-6 * r.diagonal().abs().max()  # cameras at one point: no scale
    return q[:, keep]


class PoseRefinement(nn.Module):
    """The learned corrections of one training split's poses (`corrections` [n, 6], zero at first)."""

    def __init__(self, poses: Tensor, fixed_similarity: bool = True) -> None:  # [n, 4, 4] camera-to-world, the split's own
        super().__init__()
        self.corrections = nn.Parameter(torch.zeros(poses.shape[0], 6, device=poses.device))
        basis = (
            similarity_basis(poses[:, :3, 3].detach().double().cpu()).float() if fixed_similarity else torch.zeros(poses.shape[0] * 6, 0)
        )
        self.register_buffer("basis", basis.to(poses.device))

    def effective(self) -> Tensor:  # [n, 6]
        """The corrections with their common similarity removed (unless every camera may move freely:
        a held-out view aligned to a fixed scene)."""
        flat = self.corrections.reshape(-1)
        return (flat - self.basis @ (self.basis.T @ flat)).view_as(self.corrections)

    def forward(self, poses: Tensor, image: Tensor) -> Tensor:  # [k, 4, 4], [k] -> [k, 4, 4]
        """The poses of images `image` (their rows in the split) with their corrections applied."""
        correction = self.effective()[image]
        rotation = so3_exp(correction[:, :3]) @ poses[:, :3, :3]
        centre = poses[:, :3, 3] + correction[:, 3:]
        top = torch.cat([rotation, centre[:, :, None]], dim=2)
        return torch.cat([top, poses[:, 3:, :]], dim=1)

    @torch.no_grad()
    def sizes(self) -> tuple[Tensor, Tensor]:  # [n] degrees, [n] world units
        """Each photo's correction: its rotation angle in degrees and its shift."""
        correction = self.effective()
        return torch.rad2deg(correction[:, :3].norm(dim=1)), correction[:, 3:].norm(dim=1)
