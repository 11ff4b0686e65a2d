"""Centring and scaling captures (nerfstudio, COLMAP) into the scene box.

Captures come in any frame and unit; the box is fixed (`data.aabb`, +-1.5 by default) and
tuned, like NeRF-synthetic's Blender scenes, for cameras about 4 units from the centre.
The rule, a similarity without rotation (so "up" stays what the capture says it is):

- centre: the point nearest (least squares) to every camera's optical axis, i.e. what
  the cameras look at, when the axes cross (an orbit or any capture whose viewing
  directions spread by more than ~13 degrees); otherwise (a forward-facing capture) the
  per-axis median of COLMAP's 3-D points where the model has them, else the mean
  camera position;
- scale: the cameras' mean distance from that centre becomes `CAMERA_RADIUS` (4 units).

It is computed from every view of the dataset (all splits), so the splits and the styles
of one scene, which share their cameras, share the transform.
"""

from __future__ import annotations

import numpy as np

CAMERA_RADIUS = 4.0
MIN_SPREAD = 0.05  # smallest eigenvalue of mean(I - d d^T) for the axes to cross: sin^2 ~ 13 deg


def scene_transform(
    poses: np.ndarray,  # [n, 4, 4] camera-to-world, OpenGL axes (the camera looks down -z)
    points: np.ndarray | None = None,  # [m, 3] 3-D points of the capture, if any
) -> np.ndarray:  # [4, 4] float64 similarity: scene = s * (x - centre)
    """The scene-from-file transform of a capture, by the rule in the module docstring."""
    origins = poses[:, :3, 3].astype(np.float64)
    forwards = -poses[:, :3, 2].astype(np.float64)
    forwards /= np.linalg.norm(forwards, axis=1, keepdims=True)
    projectors = np.eye(3)[None] - forwards[:, :, None] * forwards[:, None, :]  # [n, 3, 3]
    system = projectors.mean(axis=0)
    if len(poses) > 1 and np.linalg.eigvalsh(system)[0] > MIN_SPREAD:
        centre = np.linalg.solve(system, np.einsum("nij,nj->i", projectors, origins) / len(poses))
    elif points is not None and len(points):
        centre = np.median(points.astype(np.float64), axis=0)
    else:
        centre = origins.mean(axis=0)
    distance = np.linalg.norm(origins - centre, axis=1).mean()
    scale = CAMERA_RADIUS / distance if distance > 0 else 1.0
    transform = np.eye(4)
    transform[:3, :3] *= scale
    transform[:3, 3] = -scale * centre
    return transform


def apply_transform(poses: np.ndarray, transform: np.ndarray) -> np.ndarray:  # [n, 4, 4], [4, 4] -> [n, 4, 4]
    """Moves camera-to-world poses by a similarity; rotations stay orthonormal."""
    moved = poses.astype(np.float64).copy()
    moved[:, :3, 3] = poses[:, :3, 3] @ transform[:3, :3].T + transform[:3, 3]
    return moved
