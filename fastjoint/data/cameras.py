"""Cameras in the Blender/OpenGL convention: x right, y up, looking down -z.

A `Camera` holds one split's intrinsics: focal lengths `focal` (x) and `focal_y`, the
principal point (`cx`, `cy`) and OpenCV's lens distortion (k1, k2, p1, p2, k3). Pixel
coordinates put the centre of the top-left pixel at (0.5, 0.5), as COLMAP and nerfstudio
do. Distortion is undone in the ray directions: a pixel's normalised coordinates are
undistorted (Newton's method on OpenCV's forward model) before they become a direction.
`pixel_rays` is the one place rays are made; training, rendering and evaluation all use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

NO_DISTORTION = (0.0, 0.0, 0.0, 0.0, 0.0)
UNDISTORT_ITERATIONS = 10  # Newton steps; converges to float64 precision for real lenses in 3-5


@dataclass(frozen=True)
class Camera:
    """Intrinsics shared by every view of a split.

    `Camera(width, height, focal)` is the centred square-pixel pinhole of Blender-format
    data; the other fields default to it (`focal_y` to `focal`, the principal point to the
    image centre, no distortion).
    """

    width: int
    height: int
    focal: float  # pixels, horizontal (fx)
    focal_y: float | None = None  # pixels, vertical (fy); None: same as focal
    cx: float | None = None  # principal point in pixels; None: width / 2
    cy: float | None = None  # None: height / 2
    distortion: tuple[float, float, float, float, float] = NO_DISTORTION  # OpenCV's k1, k2, p1, p2, k3

    def __post_init__(self) -> None:
        # Fill the defaults so that equal cameras compare equal however they were written.
        if self.focal_y is None:
            object.__setattr__(self, "focal_y", self.focal)
        if self.cx is None:
            object.__setattr__(self, "cx", 0.5 * self.width)
        if self.cy is None:
            object.__setattr__(self, "cy", 0.5 * self.height)
        object.__setattr__(self, "distortion", tuple(float(v) for v in self.distortion))
        assert len(self.distortion) == 5, f"distortion needs (k1, k2, p1, p2, k3), got {self.distortion}"

    @staticmethod
    def from_angle(width: int, height: int, camera_angle_x: float) -> Camera:
        return Camera(width, height, 0.5 * width / math.tan(0.5 * camera_angle_x))

    @property
    def is_distorted(self) -> bool:
        return any(v != 0.0 for v in self.distortion)

    def scaled(self, factor: int) -> Camera:
        """The camera of images shrunk by an integer `factor` (distortion is in normalised
        coordinates, so it does not change)."""
        return Camera(
            self.width // factor,
            self.height // factor,
            self.focal / factor,
            self.focal_y / factor,
            self.cx / factor,
            self.cy / factor,
            self.distortion,
        )


def distort(
    x: Tensor,  # [B] normalised image x (OpenCV axes: right)
    y: Tensor,  # [B] normalised image y (OpenCV axes: down)
    distortion: tuple[float, float, float, float, float],
) -> tuple[Tensor, Tensor]:  # distorted x [B], y [B]
    """OpenCV's lens model: radial k1, k2, k3 and tangential p1, p2."""
    k1, k2, p1, p2, k3 = distortion
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def undistort(
    xd: Tensor,  # [B] distorted normalised x
    yd: Tensor,  # [B] distorted normalised y
    distortion: tuple[float, float, float, float, float],
    iterations: int = UNDISTORT_ITERATIONS,
) -> tuple[Tensor, Tensor]:  # undistorted x [B], y [B], in the input's dtype
    """Inverts `distort` by Newton's method (2x2 Jacobian per point), in float64."""
    k1, k2, p1, p2, k3 = distortion
    target_x, target_y = xd.double(), yd.double()
    x, y = target_x.clone(), target_y.clone()
    for _ in range(iterations):
        fx, fy = distort(x, y, distortion)
        fx, fy = fx - target_x, fy - target_y
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)  # d radial / d r2
        # Jacobian of distort: d(xd, yd) / d(x, y).
        j_xx = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
        j_xy = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        j_yx = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        j_yy = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
        det = j_xx * j_yy - j_xy * j_yx
        x = x - (j_yy * fx - j_xy * fy) / det
        y = y - (-j_yx * fx + j_xx * fy) / det
    return x.to(xd.dtype), y.to(yd.dtype)


def pixel_rays(
    poses: Tensor,  # [B, 4, 4] camera-to-world of each ray's view
    px: Tensor,  # [B] pixel column (0.5 is the centre of the first column)
    py: Tensor,  # [B] pixel row (0.5 is the centre of the first row)
    camera: Camera,
) -> tuple[Tensor, Tensor]:  # origins [B, 3], unit directions [B, 3]
    """World-space rays through image points."""
    x = (px - camera.cx) / camera.focal
    y = (py - camera.cy) / camera.focal_y  # OpenCV's y, pointing down the image
    if camera.is_distorted:
        x, y = undistort(x, y, camera.distortion)
    local = torch.stack([x, -y, -torch.ones_like(px)], dim=-1)
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
