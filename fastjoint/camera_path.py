"""Camera paths: nerfstudio's camera-path JSON, and paths made from a dataset's cameras.

The file is the one `ns-render camera-path` reads (nerfstudio's viewer writes it):

    {"camera_type": "perspective", "render_width": 640, "render_height": 480,
     "fps": 24, "seconds": 4,
     "camera_path": [{"camera_to_world": [16 numbers, row-major], "fov": 50, "aspect": 1.333}, ...]}

Each entry of `camera_path` is one frame: `camera_to_world` a 4x4 matrix (16 numbers, or
4 rows of 4) in OpenGL's axes (x right, y up, the camera looks down -z), `fov` the vertical
field of view in degrees (focal length = render_height / 2 / tan(fov / 2), as nerfstudio's
renderer takes it), `aspect` informational (the frame's size is `render_width` x
`render_height`). `fps` gives the video's rate (or, without it, frames / `seconds`).

Poses are in the run's world frame: the frame fastjoint trains in, the one `data.aabb` is
given in. For Blender-format data that is the file's own frame; nerfstudio and COLMAP
captures are moved into the box by `recentre.py` (a scale and a shift, no rotation), so a
path authored in nerfstudio's viewer for the same capture must be undone from nerfstudio's
`dataparser_transforms.json` and then put through fastjoint's transform (see the README).
Paths saved by fastjoint's viewer are already in the run's frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fastjoint.data import Camera, look_at, orbit_poses
from fastjoint.data.colmap import quaternion_to_rotation, rotation_to_quaternion
from fastjoint.errors import UserError
from fastjoint.files import atomic_path

PATHS = ("orbit", "interpolate", "spiral")  # the paths `fastjoint render --path` makes from a dataset's cameras
DEFAULT_FPS = 24.0
KEYFRAMES = 8  # training cameras an interpolated path passes through
ORTHONORMAL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CameraPath:
    """Frames to render: poses [n, 4, 4] (camera-to-world, the run's world frame), vertical fov [n] in degrees."""

    poses: Tensor
    fov: Tensor
    width: int
    height: int
    fps: float = DEFAULT_FPS

    def __len__(self) -> int:
        return int(self.poses.shape[0])

    def camera(self, i: int) -> Camera:
        """The pinhole camera of frame `i` (square pixels, centred)."""
        focal = 0.5 * self.height / math.tan(math.radians(float(self.fov[i])) / 2.0)
        return Camera(self.width, self.height, focal)

    def resized(self, size: int | tuple[int, int]) -> CameraPath:
        """The same path at another frame size, a height (the width keeps the aspect) or (width, height);
        the vertical field of view is kept."""
        width, height = frame_size(self.width, self.height, size)
        return CameraPath(self.poses, self.fov, width, height, self.fps)

    def moved(self, transform: Tensor) -> CameraPath:
        """The path in another frame: `transform` [4, 4] a similarity (rotation, uniform scale, shift)
        from this path's frame to the new one; orientations stay rigid, the field of view unchanged."""
        transform = transform.double()
        linear = transform[:3, :3]
        scale = torch.linalg.det(linear).abs() ** (1.0 / 3.0)
        poses = self.poses.double().clone()
        poses[:, :3, :3] = (linear / scale) @ poses[:, :3, :3]
        poses[:, :3, 3] = poses[:, :3, 3] @ linear.T + transform[:3, 3]
        return CameraPath(poses.float(), self.fov, self.width, self.height, self.fps)


def frame_size(width: int, height: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """A frame of `width` x `height` at `size`: a height (the width keeps the aspect) or (width, height)."""
    return (round(width * size / height), size) if isinstance(size, int) else size


def vertical_fov(camera: Camera) -> float:
    """A camera's vertical field of view in degrees."""
    return math.degrees(2.0 * math.atan(0.5 * camera.height / camera.focal_y))


def _number(value: object, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low < value < high:
        bounds = "" if (low, high) == (-math.inf, math.inf) else f" in ({low:g}, {high:g})"
        raise UserError(f"{where} must be a number{bounds}, got {json.dumps(value)}")
    return float(value)


def _size(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where} must be a positive whole number, got {json.dumps(value)}")
    return value


def load_camera_path(path: Path) -> CameraPath:
    """Reads a camera-path JSON file (see the module docstring); UserError names the key at fault."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such camera-path file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a camera path is a JSON object with 'camera_path', got {type(data).__name__}")
    camera_type = data.get("camera_type", "perspective")
    if camera_type != "perspective":
        raise UserError(f'{path}: camera_type {json.dumps(camera_type)} is not supported (only "perspective")')
    for key in ("render_width", "render_height", "camera_path"):
        if key not in data:
            raise UserError(f"{path}: no '{key}'")
    width = _size(data["render_width"], f"{path}: render_width")
    height = _size(data["render_height"], f"{path}: render_height")
    frames = data["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: camera_path must be a non-empty list of frames")
    if "fps" in data:
        fps = _number(data["fps"], f"{path}: fps", 0.0)
    elif "seconds" in data:
        fps = len(frames) / _number(data["seconds"], f"{path}: seconds", 0.0)
    else:
        fps = DEFAULT_FPS
    poses, fovs = [], []
    for i, frame in enumerate(frames):
        where = f"{path}: camera_path[{i}]"
        if not isinstance(frame, dict):
            raise UserError(f"{where} must be an object with camera_to_world and fov")
        for key in ("camera_to_world", "fov"):
            if key not in frame:
                raise UserError(f"{where}: no '{key}'")
        matrix = frame["camera_to_world"]
        if isinstance(matrix, list) and len(matrix) == 4 and all(isinstance(row, list) for row in matrix):
            matrix = [v for row in matrix for v in row]
        if not isinstance(matrix, list) or len(matrix) != 16:
            raise UserError(f"{where}.camera_to_world must be 16 numbers (a 4x4 matrix, row-major)")
        values = [_number(v, f"{where}.camera_to_world[{j}]") for j, v in enumerate(matrix)]
        pose = np.asarray(values, dtype=np.float64).reshape(4, 4)
        rotation = pose[:3, :3]
        if not np.allclose(pose[3], (0, 0, 0, 1), atol=ORTHONORMAL_TOLERANCE) or not np.allclose(
            rotation.T @ rotation, np.eye(3), atol=ORTHONORMAL_TOLERANCE
        ):
            raise UserError(f"{where}.camera_to_world is not a rigid transform (rotation and translation, last row 0 0 0 1)")
        poses.append(pose)
        fovs.append(_number(frame["fov"], f"{where}.fov", 0.0, 180.0))
    return CameraPath(torch.tensor(np.stack(poses), dtype=torch.float32), torch.tensor(fovs, dtype=torch.float32), width, height, fps)


def camera_path_json(camera_path: CameraPath, keyframes: list[dict] | None = None) -> dict:
    """The JSON object of a path (nerfstudio's layout; `keyframes`, if given, is kept for the viewer)."""
    aspect = camera_path.width / camera_path.height
    data = {
        "camera_type": "perspective",
        "render_width": camera_path.width,
        "render_height": camera_path.height,
        "fps": camera_path.fps,
        "seconds": len(camera_path) / camera_path.fps,
        "camera_path": [
            {"camera_to_world": [float(v) for v in pose.reshape(-1)], "fov": float(fov), "aspect": aspect}
            for pose, fov in zip(camera_path.poses.double(), camera_path.fov, strict=True)
        ],
    }
    if keyframes is not None:
        data["keyframes"] = keyframes
    return data


def save_camera_path(path: Path, camera_path: CameraPath, keyframes: list[dict] | None = None) -> Path:
    """Writes a path as camera-path JSON (atomically); returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(camera_path_json(camera_path, keyframes), indent=1) + "\n")
    return path


# Paths made from a dataset's cameras --------------------------------------------------------


def orbit_path(poses: Tensor, centre: Tensor, n: int) -> Tensor:  # [m, 4, 4], [3] -> [n, 4, 4]
    """An orbit at the cameras' mean distance and elevation around `centre`, from the first camera's azimuth."""
    offsets = poses[:, :3, 3] - centre
    radius = offsets.norm(dim=-1).mean().item()
    elevation = torch.asin((offsets[:, 2] / offsets.norm(dim=-1)).clamp(-1, 1)).mean().item()
    start = math.atan2(offsets[0, 1].item(), offsets[0, 0].item())
    return orbit_poses(n, radius, elevation, centre, start_azimuth=start)


def _tour(points: np.ndarray) -> list[int]:
    """A short open tour through `points` (nearest neighbour from the first)."""
    left = list(range(1, len(points)))
    order = [0]
    while left:
        distances = np.linalg.norm(points[left] - points[order[-1]], axis=1)
        order.append(left.pop(int(np.argmin(distances))))
    return order


def _catmull_rom(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, t: float) -> np.ndarray:
    """The uniform Catmull-Rom spline from p1 (t = 0) to p2 (t = 1)."""
    t2, t3 = t * t, t * t * t
    return 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)


def interpolate_poses(keyframes: Tensor, n: int, cycle: bool = False) -> Tensor:  # [k, 4, 4] -> [n, 4, 4]
    """`n` poses along a smooth curve through `keyframes`, in order: Catmull-Rom splines through the
    positions and through the orientations (as sign-aligned quaternions, renormalised).

    Frame 0 is the first keyframe and, without `cycle`, frame n - 1 the last; with `cycle`
    the path closes back to the first keyframe.
    """
    poses = keyframes.double().numpy()
    k = len(poses)
    if k == 1 or n == 1:
        return torch.tensor(poses[:1], dtype=torch.float32).repeat(n, 1, 1)
    positions = poses[:, :3, 3]
    quaternions = [rotation_to_quaternion(p[:3, :3]) for p in poses]
    for i in range(1, k):  # the short way round between neighbours
        if np.dot(quaternions[i], quaternions[i - 1]) < 0:
            quaternions[i] = -quaternions[i]
    quaternions = np.stack(quaternions)
    segments = k if cycle else k - 1
    if cycle and np.dot(quaternions[0], quaternions[-1]) < 0:
        quaternions_wrap = -quaternions[0]
    else:
        quaternions_wrap = quaternions[0]

    def point(values: np.ndarray, wrap: np.ndarray, i: int) -> np.ndarray:
        if cycle:
            return wrap if i == k else values[i % k]
        return values[min(max(i, 0), k - 1)]

    frames = []
    for j in range(n):
        s = j * segments / (n if cycle else n - 1)
        i = min(int(s), segments - 1)
        t = s - i
        position = _catmull_rom(*(point(positions, positions[0], i + d) for d in (-1, 0, 1, 2)), t)
        q = _catmull_rom(*(point(quaternions, quaternions_wrap, i + d) for d in (-1, 0, 1, 2)), t)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = quaternion_to_rotation(q), position
        frames.append(pose)
    return torch.tensor(np.stack(frames), dtype=torch.float32)


def interpolated_path(poses: Tensor, n: int, keyframes: int = KEYFRAMES) -> Tensor:  # [m, 4, 4] -> [n, 4, 4]
    """A smooth path through up to `keyframes` of the cameras, visited along a short tour of their positions."""
    order = _tour(poses[:, :3, 3].double().numpy())
    picks = np.linspace(0, len(order) - 1, min(keyframes, len(order))).round().astype(int)
    return interpolate_poses(poses[[order[i] for i in picks]], n)


def spiral_path(poses: Tensor, focus: Tensor, n: int, turns: float = 2.0) -> Tensor:  # [m, 4, 4], [3] -> [n, 4, 4]
    """A forward-facing spiral (as LLFF's renders): around the cameras' mean position, in the plane of
    their mean view, with radii the 90th percentile of their spread, every frame looking at `focus`."""
    centres = poses[:, :3, 3].double()
    mean = centres.mean(0)
    forward = torch.nn.functional.normalize(-poses[:, :3, 2].double().mean(0), dim=0)
    up = torch.nn.functional.normalize(poses[:, :3, 1].double().mean(0), dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    up = torch.linalg.cross(right, forward)
    offsets = centres - mean
    radii = [max(torch.quantile((offsets @ axis).abs(), 0.9).item(), 1e-3) for axis in (right, up, forward)]
    frames = []
    for i in range(n):
        theta = 2.0 * math.pi * turns * i / n
        eye = (
            mean + radii[0] * math.cos(theta) * right + radii[1] * math.sin(theta) * up + radii[2] * 0.5 * math.sin(theta / turns) * forward
        )
        frames.append(look_at(eye.float(), focus.float(), up.float()))
    return torch.stack(frames)
