"""A scene in a style as files other tools open: RUN/exports/<scene>_<style>/.

- mesh.ply and mesh.glb: the surface where the scene's density crosses a threshold,
  extracted by marching cubes (scikit-image) from the density sampled on a grid over the
  scene box; the occupancy grid's empty cells are not evaluated (their density is taken as
  zero). The threshold is by default where the renders put the surface: the median density
  at the point cloud's points (`surface_threshold`); a run's densities grow sharper with
  training, so no one number suits every run (benchmarks/README.md, "Export"). Each vertex is coloured by the style's decoder on the style feature at the vertex,
  averaged over view directions as the fast renderer's bake does (`vertex_colours`).
- points.ply: surface points with colours, from the training views rendered in the style:
  the pixels whose opacity passes SURFACE_OPACITY, back-projected to their expected depth,
  coloured by the surface colour the render shows there (its colour on black over its
  opacity, so the backdrop does not leak in at the edges).

Coordinates are the run's scene frame (world z up). PLY holds the colours as rendered
(sRGB); the GLB holds them linear, as glTF requires of COLOR_0, and its one node turns the
scene's z-up into glTF's y-up, so that a glTF viewer shows the scene upright. trimesh
writes all three files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from fastjoint.architecture import architecture
from fastjoint.data import pixel_rays
from fastjoint.datasets import load_scene_split
from fastjoint.errors import UserError
from fastjoint.files import atomic_path
from fastjoint.model.joint import normals_of
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.render.baked import BAKE_DIRECTIONS
from fastjoint.run import LoadedRun

EXPORTS_FOLDER = "exports"
SURFACE_OPACITY = 0.5  # a pixel whose opacity passes this shows a surface
DENSITY_CHUNK = 1 << 18  # grid points whose density is evaluated at once
COLOUR_CHUNK = 1 << 14  # vertices coloured at once (each seen from every BAKE_DIRECTIONS)
POINT_SEED = 0  # which pixels the point cloud takes is the same on every call
# glTF is y-up; the scene is z-up: (x, y, z) -> (x, z, -y), as Blender's glTF exporter turns it.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])

Progress = Callable[[int, int], None]
PhasedProgress = Callable[[str, int, int], None]  # (phase, done, total)


class Mesh(NamedTuple):
    vertices: np.ndarray  # [V, 3] float32, scene frame
    faces: np.ndarray  # [F, 3] int64, counter-clockwise seen from outside
    normals: np.ndarray  # [V, 3] float32 unit, pointing out of the surface
    colours: np.ndarray  # [V, 3] float32 in [0, 1], as rendered (sRGB)


class PointCloud(NamedTuple):
    points: np.ndarray  # [N, 3] float32, scene frame
    colours: np.ndarray  # [N, 3] float32 in [0, 1], as rendered (sRGB)


class ExportFiles(NamedTuple):
    mesh_ply: Path
    mesh_glb: Path
    points_ply: Path


class ExportResult(NamedTuple):
    """What `export_pairing` wrote and what it used."""

    files: ExportFiles
    resolution: int  # density samples per axis of the box
    threshold: float  # the density (sigma) the mesh was cut at
    threshold_chosen: bool  # True: the median density at the surface points (no threshold was given)
    vertices: int
    faces: int
    points: int
    seconds: float  # the whole export, files included


def export_folder(run: LoadedRun, pairing: Pairing) -> Path:
    """Where `fastjoint export` writes a pairing by default: RUN/exports/<scene>_<style>."""
    return run.run_dir / EXPORTS_FOLDER / pairing.slug


def grid_axes(aabb: Tensor, resolution: int) -> list[Tensor]:  # [6] -> 3 x [resolution]
    """The grid's sample positions along each axis: `resolution` points from the box's low to its high side."""
    return [torch.linspace(float(aabb[i]), float(aabb[i + 3]), resolution, device=aabb.device) for i in range(3)]


def occupancy_test(run: LoadedRun, scene: str) -> Callable[[Tensor], Tensor] | None:
    """What says whether points [N, 3] lie in the scene's occupancy grid grown by one cell ([N] bool); None without a grid.

    Growing the grid keeps a point on the face of an occupied cell, and densities that the
    grid's sparse random updates missed next to one, from being taken as empty.
    """
    if not architecture(run.config).uses_occupancy:
        return None
    estimator = run.built.estimators[scene]
    cells = estimator.binaries[0].float()[None, None]  # level 0 covers the scene box
    grown = torch.nn.functional.max_pool3d(cells, 3, stride=1, padding=1)[0, 0] > 0
    box = estimator.aabbs[0]
    resolution = torch.tensor(grown.shape, device=grown.device)

    def inside(points: Tensor) -> Tensor:
        index = ((points - box[:3]) / (box[3:] - box[:3]) * resolution).long()
        index = torch.minimum(index.clamp(min=0), resolution - 1)
        return grown[index[:, 0], index[:, 1], index[:, 2]]

    return inside


@torch.no_grad()
def density_grid(run: LoadedRun, scene: str, resolution: int, progress: Progress | None = None) -> np.ndarray:
    """The scene's density on a resolution^3 grid over its box, [R, R, R] float32 indexed x, y, z.

    Points in cells the occupancy grid marks empty are not evaluated: their density is 0.
    """
    built = run.built
    aabb = torch.tensor(run.config.data.aabb, dtype=torch.float32, device=built.device)
    xs, ys, zs = grid_axes(aabb, resolution)
    plane = torch.stack(torch.meshgrid(ys, zs, indexing="ij"), dim=-1).reshape(-1, 2)  # one x-slice's (y, z)
    volume = torch.zeros(resolution, resolution * resolution, device=built.device)
    slices = max(1, DENSITY_CHUNK // plane.shape[0])
    inside = occupancy_test(run, scene)
    for start in range(0, resolution, slices):
        x = xs[start : start + slices]
        points = torch.cat([x[:, None, None].expand(-1, plane.shape[0], 1), plane[None].expand(x.shape[0], -1, -1)], dim=-1)
        points = points.reshape(-1, 3)
        if inside is None:
            values = built.model.density(scene, points).float()
        else:
            keep = inside(points)
            values = torch.zeros(points.shape[0], device=built.device)
            if keep.any():
                values[keep] = built.model.density(scene, points[keep]).float()
        volume[start : start + x.shape[0]] = values.reshape(x.shape[0], -1)
        if progress is not None:
            progress(min(start + slices, resolution), resolution)
    return volume.reshape(resolution, resolution, resolution).cpu().numpy()


def extract_surface(volume: np.ndarray, aabb: Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching cubes on a density grid [R, R, R] over `aabb`: vertices [V, 3] (scene frame), faces [F, 3], outward normals [V, 3].

    UserError naming --threshold when no surface crosses it.
    """
    from skimage.measure import marching_cubes

    low, high = float(volume.min()), float(volume.max())
    if not low < threshold < high:
        where = "above" if threshold >= high else "below"
        raise UserError(
            f"--threshold: {threshold:g} is {where} every density sampled in the scene box ({low:.3g} to {high:.3g}); no surface crosses it"
        )
    box = aabb.double().cpu().numpy()
    spacing = tuple((box[3:] - box[:3]) / (volume.shape[0] - 1))
    # The density rises into the surface: scikit-image's "ascent" puts its normals, and the
    # faces' counter-clockwise side, where it falls, outside.
    vertices, faces, normals, _ = marching_cubes(volume, level=threshold, spacing=spacing, gradient_direction="ascent")
    return (vertices + box[:3]).astype(np.float32), faces.astype(np.int64), normals.astype(np.float32)


@torch.no_grad()
def vertex_colours(run: LoadedRun, pairing: Pairing, vertices: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Each vertex's colour in the pairing's style: its decoder on the style feature at the vertex,
    averaged over BAKE_DIRECTIONS (what the fast renderer shows there in a bounded scene; a mesh has no
    view direction), and where the decoders read it the model's normal there (a vertex is on the
    surface), [V, 3] in [0, 1]."""
    built = run.built
    model, decoder = built.model, built.model.decoders[pairing.style]
    directions = BAKE_DIRECTIONS.to(built.device)
    points = torch.from_numpy(vertices).to(built.device)
    colours = []
    for start in range(0, points.shape[0], COLOUR_CHUNK):
        chunk = points[start : start + COLOUR_CHUNK]
        repeated = chunk[:, None, :].expand(-1, directions.shape[0], -1).reshape(-1, 3)
        _, features = model.features(pairing.scene, repeated, directions.repeat(chunk.shape[0], 1))
        mean = features.reshape(chunk.shape[0], directions.shape[0], -1).mean(dim=1)
        if model.decoder_normal:
            mean = torch.cat([mean, normals_of(model.encoders[pairing.scene], chunk)], dim=1)
        colours.append(decoder(mean).clamp(0.0, 1.0).float().cpu())
        if progress is not None:
            progress(min(start + COLOUR_CHUNK, points.shape[0]), points.shape[0])
    if not colours:
        return np.zeros((0, 3), dtype=np.float32)
    return torch.cat(colours).numpy()


def extract_mesh(
    run: LoadedRun,
    pairing: Pairing,
    resolution: int,
    threshold: float,
    progress: Progress | None = None,
    colour_progress: Progress | None = None,
) -> Mesh:
    """The pairing's surface at `threshold` (a density, sigma) from a resolution^3 grid, its vertices coloured in the style."""
    volume = density_grid(run, pairing.scene, resolution, progress)
    vertices, faces, normals = extract_surface(volume, torch.tensor(run.config.data.aabb), threshold)
    return Mesh(vertices, faces, normals, vertex_colours(run, pairing, vertices, colour_progress))


@torch.no_grad()
def surface_points(run: LoadedRun, pairing: Pairing, n_points: int, progress: Progress | None = None) -> PointCloud:
    """Up to `n_points` surface points of the pairing seen from its scene's training views.

    Pixels are taken in rounds, an equal share of each view's pixels in a fixed random order
    per round, until `n_points` of them show a surface (opacity above SURFACE_OPACITY) or
    every pixel is taken; so only about n_points / (the views' covered fraction) rays are
    rendered. Each surface pixel gives the point at its expected depth and the colour the
    render shows there, the backdrop taken out.
    """
    built = run.built
    data = run.config.data
    views = load_scene_split(data, pairing.scene, data.dataset(Pairing(pairing.scene, ORIGINAL)), "train")  # the scene's cameras
    camera, n_views = views.camera, len(views.poses)
    n_pixels = camera.width * camera.height
    share = min(n_pixels, max(1, math.ceil(2 * n_points / n_views)))  # two pixels per wanted point: about half of a view is empty
    black = torch.zeros(3, device=built.device)
    points, colours, found = [], [], 0
    for start in range(0, n_pixels, share):
        for view in range(n_views):
            order = torch.randperm(n_pixels, generator=torch.Generator().manual_seed(POINT_SEED + view))
            pixel = order[start : start + share].to(built.device)
            px, py = (pixel % camera.width).float() + 0.5, (pixel // camera.width).float() + 0.5
            poses = views.poses[view].to(built.device)[None].expand(pixel.shape[0], 4, 4)
            rays_o, rays_d = pixel_rays(poses, px, py, camera)
            result = built.render_chunked(pairing, rays_o, rays_d, black)
            hit, where = result.surface(rays_o, rays_d, SURFACE_OPACITY)
            points.append(where.float().cpu())
            colours.append((result.rgb[hit] / result.opacity[hit, None]).clamp(0.0, 1.0).float().cpu())
            found += int(hit.sum())
            if progress is not None:
                progress(min(found, n_points), n_points)
        if found >= n_points:
            break
    if progress is not None:
        progress(n_points, n_points)
    all_points, all_colours = torch.cat(points), torch.cat(colours)
    if all_points.shape[0] > n_points:  # the last round's excess, taken evenly from every view
        keep = torch.randperm(all_points.shape[0], generator=torch.Generator().manual_seed(POINT_SEED))[:n_points].sort().values
        all_points, all_colours = all_points[keep], all_colours[keep]
    return PointCloud(all_points.numpy(), all_colours.numpy())


@torch.no_grad()
def surface_threshold(run: LoadedRun, scene: str, points: np.ndarray) -> float:
    """The median density at surface points [N, 3] (where the renders put the surface): the level
    that passes through them. UserError when there are none."""
    if points.shape[0] == 0:
        raise UserError(f"--threshold: no view of the {scene} shows a surface (opacity > {SURFACE_OPACITY}) to take it from; give one")
    positions = torch.from_numpy(points).to(run.built.device)
    density = torch.cat([run.built.model.density(scene, chunk).float() for chunk in positions.split(DENSITY_CHUNK)])
    return float(density.median())


def export_pairing(
    run: LoadedRun,
    pairing: Pairing,
    resolution: int,
    threshold: float | None,
    n_points: int,
    folder: Path,
    progress: PhasedProgress | None = None,
) -> ExportResult:
    """Writes a pairing's point cloud and mesh (see the module's docstring) to `folder`.

    `threshold` None: `surface_threshold` of the point cloud. `progress(phase, done, total)`
    follows each phase: "points", "density", "colours".
    """
    start = time.perf_counter()

    def phase(name: str) -> Progress | None:
        return None if progress is None else lambda done, total: progress(name, done, total)

    cloud = surface_points(run, pairing, n_points, phase("points"))
    chosen = threshold is None
    if threshold is None:
        threshold = surface_threshold(run, pairing.scene, cloud.points)
    mesh = extract_mesh(run, pairing, resolution, threshold, phase("density"), phase("colours"))
    files = write_exports(mesh, cloud, folder)
    seconds = time.perf_counter() - start
    return ExportResult(files, resolution, threshold, chosen, len(mesh.vertices), len(mesh.faces), len(cloud.points), seconds)


def to_bytes(colours: np.ndarray) -> np.ndarray:  # [N, 3] in [0, 1] -> [N, 4] uint8, opaque
    """Colours as the RGBA bytes the files hold."""
    rgb = np.clip(np.round(colours * 255.0), 0, 255).astype(np.uint8)
    return np.concatenate([rgb, np.full((rgb.shape[0], 1), 255, dtype=np.uint8)], axis=1)


def srgb_to_linear(colours: np.ndarray) -> np.ndarray:  # [N, 3] in [0, 1]
    """The sRGB transfer function undone (IEC 61966-2-1): what glTF's vertex colours hold."""
    return np.where(colours <= 0.04045, colours / 12.92, ((colours + 0.055) / 1.055) ** 2.4)


def write_mesh_ply(mesh: Mesh, path: Path) -> None:
    """Binary PLY: vertices with normals and RGBA colours (as rendered), triangles."""
    import trimesh

    shape = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=mesh.normals, vertex_colors=to_bytes(mesh.colours), process=False)
    with atomic_path(path) as partial:
        shape.export(partial, file_type="ply")


def write_mesh_glb(mesh: Mesh, path: Path) -> None:
    """glTF binary: one mesh of linear vertex colours (COLOR_0) on a white matte material, its node turned y-up.

    The material is a double-sided white with no metal (glTF's default material is fully
    metallic, which viewers draw nearly black); COLOR_0 multiplies it.
    """
    import trimesh
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    material = PBRMaterial(name="radiance", baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0, doubleSided=True)
    visual = TextureVisuals(material=material)
    visual.vertex_attributes["color"] = to_bytes(srgb_to_linear(mesh.colours))
    shape = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=mesh.normals, visual=visual, process=False)
    scene = trimesh.Scene()
    scene.add_geometry(shape, node_name="mesh", geom_name="mesh", transform=Z_UP_TO_Y_UP)
    with atomic_path(path) as partial:
        partial.write_bytes(scene.export(file_type="glb"))


def write_points_ply(cloud: PointCloud, path: Path) -> None:
    """Binary PLY: points with RGBA colours (as rendered)."""
    import trimesh

    shape = trimesh.PointCloud(cloud.points, colors=to_bytes(cloud.colours))
    with atomic_path(path) as partial:
        shape.export(partial, file_type="ply")


def write_exports(mesh: Mesh, cloud: PointCloud, folder: Path) -> ExportFiles:
    """mesh.ply, mesh.glb and points.ply in `folder` (each written atomically)."""
    files = ExportFiles(folder / "mesh.ply", folder / "mesh.glb", folder / "points.ply")
    write_mesh_ply(mesh, files.mesh_ply)
    write_mesh_glb(mesh, files.mesh_glb)
    write_points_ply(cloud, files.points_ply)
    return files
