"""`fastjoint export`: how long it takes, what it writes, and whether its colours match the renders.

Exports a trained run's scene in a style (`fastjoint export RUN --style S --out DIR`, a
subprocess as a user runs it; wall time of the whole command, start to exit), reads the
three files back with trimesh, and projects the mesh's vertices and the point cloud's
points into each test view of the scene rendered in the style (the exact renderer). A
point is seen where it lands on a pixel whose rendered opacity passes 0.5 and its distance
from the camera is within `TOLERANCE` of the rendered depth there; its colour is compared
with the surface colour the view shows at that pixel (the render on black over its
opacity). Reported: the command's seconds, vertex, face and point counts, the threshold it
chose, and per file the PSNR of the seen points' colours and how many were seen.

    python -m benchmarks.export --run runs/demo [--style recolour] [--scene target] [--resolution 256]

The run's datasets are read from where its config.toml names them (relative paths from
the checkout). tests/test_export.py reuses `rendered_views` and `projected_psnr`.
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.table import Table

from benchmarks.common import RESULTS, fastjoint, write_results
from benchmarks.common import console as make_console
from fastjoint.data import Camera, image_rays
from fastjoint.pairing import Pairing
from fastjoint.renders import camera_split
from fastjoint.run import LoadedRun, load_run

TOLERANCE = 0.025  # of the scene box's longest side: how far a seen point may lie from the rendered depth
SEEN_OPACITY = 0.5


class RenderedView(NamedTuple):
    """One test view as the comparison needs it, each [H, W, ...] float64 on the CPU."""

    pose: np.ndarray  # [4, 4] camera-to-world, OpenGL axes
    camera: Camera
    colour: np.ndarray  # [H, W, 3] the surface colour shown (colour on black / opacity)
    opacity: np.ndarray  # [H, W]
    distance: np.ndarray  # [H, W] expected depth / opacity: where along the (unit) ray the surface is


@torch.no_grad()
def rendered_views(run: LoadedRun, pairing: Pairing, split: str = "test") -> list[RenderedView]:
    """The split's views of the pairing, rendered on black with the run's current renderer."""
    views = camera_split(run, pairing, split)
    camera, black = views.camera, torch.zeros(3, device=run.built.device)
    rendered = []
    for pose in views.poses:
        rays_o, rays_d = image_rays(pose.to(run.built.device), camera)
        result = run.built.render_chunked(pairing, rays_o, rays_d, black)
        opacity = result.opacity.clamp(min=1e-6)
        shape = (camera.height, camera.width)
        colour = (result.rgb / opacity[:, None]).clamp(0.0, 1.0).reshape(*shape, 3)
        distance = (result.depth / opacity).reshape(shape)
        rendered.append(
            RenderedView(
                pose.double().numpy(),
                camera,
                colour.double().cpu().numpy(),
                result.opacity.reshape(shape).double().cpu().numpy(),
                distance.double().cpu().numpy(),
            )
        )
    return rendered


def seen_pixels(points: np.ndarray, view: RenderedView, tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which points [N, 3] the view sees ([N] bool) and the row and column [k] of the pixel each seen one lands on.

    A pinhole projection (the view's lens distortion, if any, is not applied).
    """
    camera, pose = view.camera, view.pose
    local = (points.astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]  # camera axes: x right, y up, looking down -z
    ahead = -local[:, 2]
    front = ahead > 1e-9
    safe = np.where(front, ahead, 1.0)
    column = np.floor(camera.cx + camera.focal * local[:, 0] / safe).astype(np.int64)
    row = np.floor(camera.cy - camera.focal_y * local[:, 1] / safe).astype(np.int64)
    inside = front & (column >= 0) & (column < camera.width) & (row >= 0) & (row < camera.height)
    row, column = np.where(inside, row, 0), np.where(inside, column, 0)
    distance = np.linalg.norm(points - pose[:3, 3], axis=1)
    seen = inside & (view.opacity[row, column] > SEEN_OPACITY) & (np.abs(distance - view.distance[row, column]) < tolerance)
    return seen, row[seen], column[seen]


class Agreement(NamedTuple):
    psnr: float  # dB, of the seen points' colours against the views' colours at their pixels
    seen: int  # (point, view) pairs compared


def projected_psnr(points: np.ndarray, colours: np.ndarray, views: list[RenderedView], tolerance: float) -> Agreement:
    """How well coloured points [N, 3] (colours [N, 3] in [0, 1]) agree with rendered views where the views see them."""
    errors = []
    for view in views:
        seen, row, column = seen_pixels(points, view, tolerance)
        errors.append((colours[seen].astype(np.float64) - view.colour[row, column]) ** 2)
    squared = np.concatenate(errors) if errors else np.zeros((0, 3))
    if squared.size == 0:
        return Agreement(float("nan"), 0)
    return Agreement(-10.0 * math.log10(max(float(squared.mean()), 1e-12)), int(squared.shape[0]))


def box_tolerance(aabb) -> float:
    """TOLERANCE in the scene's units: a fraction of its box's longest side."""
    box = np.asarray(aabb, dtype=np.float64)
    return TOLERANCE * float((box[3:] - box[:3]).max())


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A PLY's vertices [N, 3], their colours [N, 3] in [0, 1] and its face count, read with trimesh."""
    import trimesh

    shape = trimesh.load(path, process=False)
    faces = len(shape.faces) if hasattr(shape, "faces") else 0
    colours = (shape.visual.vertex_colors if hasattr(shape, "faces") else shape.colors)[:, :3]
    return np.asarray(shape.vertices, dtype=np.float64), colours.astype(np.float64) / 255.0, faces


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--style", default="recolour")
    parser.add_argument("--scene", default="target", choices=("target", "reference"))
    parser.add_argument("--resolution", type=int, default=None, help="export --resolution (default: the command's)")
    parser.add_argument("--threshold", type=float, default=None, help="export --threshold (default: the command's)")
    parser.add_argument("--points", type=int, default=None, help="export --points (default: the command's)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = make_console()
    options = []
    for key in ("resolution", "threshold", "points"):
        if getattr(args, key) is not None:
            options += [f"--{key}", str(getattr(args, key))]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "export"
        start = time.perf_counter()
        done = fastjoint("export", str(args.run.resolve()), "--style", args.style, "--scene", args.scene, "--out", str(out), *options)
        seconds = time.perf_counter() - start
        console.print(done.stdout.strip())
        threshold = float(re.search(r"threshold ([0-9.eE+-]+)", done.stdout).group(1))
        mesh_points, mesh_colours, faces = read_ply(out / "mesh.ply")
        cloud_points, cloud_colours, _ = read_ply(out / "points.ply")
    run = load_run(args.run)
    pairing = Pairing(args.scene, args.style)
    views = rendered_views(run, pairing)
    tolerance = box_tolerance(run.config.data.aabb)
    mesh = projected_psnr(mesh_points, mesh_colours, views, tolerance)
    cloud = projected_psnr(cloud_points, cloud_colours, views, tolerance)

    table = Table(title=f"fastjoint export {args.run} --style {args.style} --scene {args.scene} {' '.join(options)}".strip())
    for column in ("file", "count", "PSNR vs test views (dB)", "seen (point, view) pairs"):
        table.add_column(column, justify="left" if column == "file" else "right")
    table.add_row("mesh (vertices)", f"{len(mesh_points)} ({faces} faces)", f"{mesh.psnr:.2f}", str(mesh.seen))
    table.add_row("points", str(len(cloud_points)), f"{cloud.psnr:.2f}", str(cloud.seen))
    console.print(table)
    console.print(
        f"command: {seconds:.1f} s start to exit; threshold {threshold:g}; tolerance {tolerance:.3f} scene units; {len(views)} test views"
    )
    path = write_results(
        "export",
        {
            "run": str(args.run),
            "pairing": pairing.name,
            "options": options,
            "command_seconds": seconds,
            "threshold": threshold,
            "tolerance": tolerance,
            "test_views": len(views),
            "mesh": {"vertices": len(mesh_points), "faces": faces, "psnr": mesh.psnr, "seen": mesh.seen},
            "points": {"points": len(cloud_points), "psnr": cloud.psnr, "seen": cloud.seen},
        },
        args.results,
    )
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
