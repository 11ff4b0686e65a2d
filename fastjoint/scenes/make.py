"""Writes a recipe's scenes, in every style, as datasets in any format of the table
`fastjoint.data.formats.FORMATS` (Blender, nerfstudio, COLMAP).

Output: <out>/<scene>/<style>/ holding the format's files, written by its record's writer
(blender: transforms_{train,val,test}.json and {train,val,test}/r_<i>.png; nerfstudio:
transforms.json with the split lists and images/<split>_r_<i>.png; colmap: sparse/0/ as
text, splits.json and images/<split>_r_<i>.png; see each format's module).
PNGs are RGBA (straight alpha), or RGB where the recipe gives the scene an opaque backdrop
in that style (RGBA with alpha 255 everywhere where the backdrop says `alpha = true`); they are the same bytes in every format. Every scene and style shares the
same cameras, so a restyled target's ground truth lines up view for view with the target
in its original style. Deterministic given the recipe. Written to a temporary folder and
moved into place, so an interrupted run leaves no half-written dataset; a stamp with the
recipe's digest, the size and the format makes the output a cache.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from fastjoint.data.cameras import look_at
from fastjoint.data.formats import DEFAULT_FORMAT, FORMATS
from fastjoint.data.split import SPLITS, WrittenViews
from fastjoint.errors import UserError
from fastjoint.scenes.raytrace import sky, trace
from fastjoint.scenes.recipe import Recipe, find_recipe, load_recipe, with_size

STAMP = "kit.json"
KIT_VERSION = 1  # bump when the renderer's output changes


def view_poses(recipe: Recipe) -> dict[str, np.ndarray]:
    """Camera-to-world poses per split: [n, 4, 4] each.

    Train and validation views are spread over the band of elevations (area-uniform,
    seeded); the test views ring the scene at one elevation, between training azimuths.
    """
    views = recipe.views
    rng = np.random.default_rng(views.seed)
    low, high = (math.sin(math.radians(e)) for e in (views.min_elevation, views.max_elevation))
    target = torch.zeros(3)

    def pose(azimuth: float, elevation: float) -> np.ndarray:
        direction = torch.tensor([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        return look_at(recipe.camera.radius * direction, target).numpy()

    def random_views(n: int) -> np.ndarray:
        azimuths = rng.uniform(0.0, 2.0 * math.pi, n)
        elevations = np.arcsin(rng.uniform(low, high, n))
        return np.stack([pose(a, e) for a, e in zip(azimuths, elevations)])

    train, val = random_views(views.train), random_views(views.val)
    ring = [(2.0 * math.pi * (i + 0.5) / views.test, math.radians(views.test_elevation)) for i in range(views.test)]
    test = np.stack([pose(a, e) for a, e in ring])
    return {"train": train, "val": val, "test": test}


def render_view(recipe: Recipe, scene: str, style: str, pose: np.ndarray) -> np.ndarray:
    """One image, anti-aliased by supersampling: [H, W, 4] uint8 RGBA, or [H, W, 3] uint8
    RGB where the scene has an opaque backdrop in this style ([H, W, 4] with alpha 255
    everywhere when the backdrop says `alpha`)."""
    size, ss = recipe.camera.size, recipe.camera.supersample
    focal = 0.5 * size / math.tan(0.5 * recipe.camera.angle_x)
    offsets = (np.arange(ss) + 0.5) / ss
    px = (np.arange(size)[:, None] + offsets[None, :]).reshape(-1)  # sub-pixel columns
    xs, ys = np.meshgrid(px, px, indexing="xy")  # [size*ss, size*ss]
    local = np.stack([(xs - 0.5 * size) / focal, -(ys - 0.5 * size) / focal, -np.ones_like(xs)], axis=-1)
    dirs = local.reshape(-1, 3) @ pose[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.broadcast_to(pose[:3, 3], dirs.shape)
    materials, lighting = recipe.style(style)
    colour, coverage = trace(recipe.scenes[scene], materials, lighting, origins, dirs)
    backdrop = recipe.backdrop(scene, style)
    if backdrop is not None:  # opaque: the sky wherever the ray misses, averaged per pixel
        colour = np.where(coverage[:, None] > 0, colour, sky(backdrop, dirs))
        rgb = np.round(np.clip(colour.reshape(size, ss, size, ss, 3).mean(axis=(1, 3)), 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], axis=-1) if backdrop.alpha else rgb
    # Average premultiplied colour and coverage over each pixel's sub-samples.
    premultiplied = (colour * coverage[:, None]).reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    alpha = coverage.reshape(size, ss, size, ss).mean(axis=(1, 3))
    rgb = np.where(alpha[..., None] > 0, premultiplied / np.maximum(alpha[..., None], 1e-8), 0.0)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    return np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)


def output_folder(recipe: Recipe, size: int | None, root: Path, format: str = DEFAULT_FORMAT) -> Path:
    """data/generated/<name>[-<format>][-<size>px]: the format unless the default (Blender),
    the size unless the recipe's."""
    name = recipe.name if format == DEFAULT_FORMAT else f"{recipe.name}-{format}"
    if size is None or size == recipe.camera.size:
        return root / name
    return root / f"{name}-{size}px"


def is_current(folder: Path, recipe: Recipe, format: str = DEFAULT_FORMAT) -> bool:
    """Whether `folder` holds this recipe's datasets at this size and in this format,
    written by this renderer."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return stamp == _stamp(recipe, format)


def _stamp(recipe: Recipe, format: str) -> dict:
    return {
        "recipe": recipe.name,
        "sha256": recipe.digest,
        "size": recipe.camera.size,
        "format": format,
        "kit_version": KIT_VERSION,
    }


def make_datasets(
    name: str,
    root: str | Path = "data/generated",
    size: int | None = None,
    force: bool = False,
    progress=None,
    format: str = DEFAULT_FORMAT,
) -> Path:
    """Writes every scene x style of recipe `name` in `format` (a key of FORMATS: blender,
    nerfstudio, colmap); returns the output folder.

    Skips the work when the folder already holds the same recipe's output (unless `force`).
    `progress`, if given, is called with (done, total) after each image.
    """
    if format not in FORMATS:
        raise UserError(f"--format: must be one of {', '.join(FORMATS)}, got {format!r}")
    recipe = load_recipe(find_recipe(name))
    folder = output_folder(recipe, size, Path(root), format)
    if size is not None:
        recipe = with_size(recipe, size)
    if not force and is_current(folder, recipe, format):
        return folder

    record = FORMATS[format]
    poses = view_poses(recipe)
    names = {split: [record.image_name(split, i) for i in range(len(poses[split]))] for split in SPLITS}
    views = WrittenViews(recipe.camera.size, recipe.camera.size, recipe.camera.angle_x, poses, names)
    total = len(recipe.scenes) * len(recipe.styles) * sum(len(p) for p in poses.values())
    done = 0
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for scene in recipe.scenes:
        for style in recipe.styles:
            dataset = staging / scene / style
            for split in SPLITS:
                for i, pose in enumerate(poses[split]):
                    path = dataset / names[split][i]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    iio.imwrite(path, render_view(recipe, scene, style, pose))
                    done += 1
                    if progress is not None:
                        progress(done, total)
            record.write(dataset, views)
    (staging / STAMP).write_text(json.dumps(_stamp(recipe, format), indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, folder)
    return folder
