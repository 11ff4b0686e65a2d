"""Pinhole cameras in the Blender/OpenGL convention: x right, y up, looking down -z."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class Camera(NamedTuple):
    """Intrinsics shared by every view of a split."""

    width: int
    height: int
    focal: float  # pixels

    @staticmethod
    def from_angle(width: int, height: int, camera_angle_x: float) -> "Camera":
        return Camera(width, height, 0.5 * width / math.tan(0.5 * camera_angle_x))


def pixel_rays(
    poses: Tensor,  # [B, 4, 4] camera-to-world of each ray's view
    px: Tensor,  # [B] pixel column (0.5 is the centre of the first column)
    py: Tensor,  # [B] pixel row (0.5 is the centre of the first row)
    camera: Camera,
) -> tuple[Tensor, Tensor]:  # origins [B, 3], unit directions [B, 3]
    """World-space rays through image points."""
    local = torch.stack(
        [
            (px - 0.5 * camera.width) / camera.focal,
            -(py - 0.5 * camera.height) / camera.focal,
            -torch.ones_like(px),
        ],
        dim=-1,
    )
    dirs = torch.einsum("bij,bj->bi", poses[:, :3, :3], local)
    return poses[:, :3, 3].expand_as(dirs).contiguous(), torch.nn.functional.normalize(dirs, dim=-1)


def image_rays(pose: Tensor, camera: Camera) -> tuple[Tensor, Tensor]:  # [H*W, 3] each, row-major
    """Rays through the centre of every pixel of one view."""
    ys, xs = torch.meshgrid(
        torch.arange(camera.height, dtype=torch.float32, device=pose.device) + 0.5,
        torch.arange(camera.width, dtype=torch.float32, device=pose.device) + 0.5,
        indexing="ij",
    )
    poses = pose[None].expand(camera.height * camera.width, 4, 4)
    return pixel_rays(poses, xs.reshape(-1), ys.reshape(-1), camera)


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:  # [3], [3] -> [4, 4]
    """Camera-to-world pose at `eye` looking at `target` (world z up)."""
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else up
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-6:  # looking straight up or down
        right = torch.tensor([1.0, 0.0, 0.0])
    right = torch.nn.functional.normalize(right, dim=0)
    true_up = torch.linalg.cross(right, forward)
    pose = torch.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, -forward, eye
    return pose


def orbit_poses(n: int, radius: float, elevation: float, target: Tensor, start_azimuth: float = 0.0) -> Tensor:
    """`n` poses on a circle of `radius` at `elevation` (radians) around `target`: [n, 4, 4]."""
    poses = []
    for i in range(n):
        azimuth = start_azimuth + 2.0 * math.pi * i / n
        offset = torch.tensor(
            [
                math.cos(elevation) * math.cos(azimuth),
                math.cos(elevation) * math.sin(azimuth),
                math.sin(elevation),
            ]
        )
        poses.append(look_at(target + radius * offset, target))
    return torch.stack(poses)
