"""Writes a recipe's scenes, in every style, as Blender-format datasets.

Output: <out>/<scene>/<style>/transforms_{train,val,test}.json and PNGs (RGBA, straight
alpha). Every scene and style shares the same cameras, so a restyled target's ground truth
lines up view for view with the target in its original style. Deterministic given the
recipe. Written to a temporary folder and moved into place, so an interrupted run leaves
no half-written dataset; a stamp with the recipe's digest makes the output a cache.
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

from fastjoint.data.blender import SPLITS
from fastjoint.data.cameras import look_at
from fastjoint.scenes.raytrace import trace
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
        direction = torch.tensor(
            [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
        )
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
    """One RGBA image [H, W, 4] uint8, anti-aliased by supersampling."""
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
    # Average premultiplied colour and coverage over each pixel's sub-samples.
    premultiplied = (colour * coverage[:, None]).reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    alpha = coverage.reshape(size, ss, size, ss).mean(axis=(1, 3))
    rgb = np.where(alpha[..., None] > 0, premultiplied / np.maximum(alpha[..., None], 1e-8), 0.0)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    return np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)


def output_folder(recipe: Recipe, size: int | None, root: Path) -> Path:
    """data/generated/<name> at the recipe's size, <name>-<size>px otherwise."""
    if size is None or size == recipe.camera.size:
        return root / recipe.name
    return root / f"{recipe.name}-{size}px"


def is_current(folder: Path, recipe: Recipe) -> bool:
    """Whether `folder` holds this recipe's datasets at this size, written by this renderer."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return stamp == _stamp(recipe)


def _stamp(recipe: Recipe) -> dict:
    return {"recipe": recipe.name, "sha256": recipe.digest, "size": recipe.camera.size, "kit_version": KIT_VERSION}


def make_datasets(
    name: str,
    root: str | Path = "data/generated",
    size: int | None = None,
    force: bool = False,
    progress=None,
) -> Path:
    """Writes every scene x style of recipe `name`; returns the output folder.

    Skips the work when the folder already holds the same recipe's output (unless `force`).
    `progress`, if given, is called with (done, total) after each image.
    """
    recipe = load_recipe(find_recipe(name))
    folder = output_folder(recipe, size, Path(root))
    if size is not None:
        recipe = with_size(recipe, size)
    if not force and is_current(folder, recipe):
        return folder

    poses = view_poses(recipe)
    total = len(recipe.scenes) * len(recipe.styles) * sum(len(p) for p in poses.values())
    done = 0
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for scene in recipe.scenes:
        for style in recipe.styles:
            dataset = staging / scene / style
            for split in SPLITS:
                (dataset / split).mkdir(parents=True, exist_ok=True)
                frames = []
                for i, pose in enumerate(poses[split]):
                    iio.imwrite(dataset / split / f"r_{i}.png", render_view(recipe, scene, style, pose))
                    frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
                    done += 1
                    if progress is not None:
                        progress(done, total)
                meta = {"camera_angle_x": recipe.camera.angle_x, "frames": frames}
                (dataset / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
    (staging / STAMP).write_text(json.dumps(_stamp(recipe), indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, folder)
    return folder
