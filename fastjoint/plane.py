"""The shared 2-D feature plane as pictures: where each scene's surface points land on it, and
each style decoder drawn over it (the "material map"). `analyze` and the viewer draw with it.

With `model.feature_dim` above 2 the plane drawn is a plane of feature space (`FeaturePlane`:
the principal plane of both scenes' surface features, through their mean).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from fastjoint.data import image_rays
from fastjoint.datasets import load_scene_split
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.run import LoadedRun

PLANE_PIXELS = 256  # side of each drawn feature plane
OPAQUE = 0.95  # a ray whose opacity passes this has hit a surface
VIEWS = 12  # training views per scene whose surface points are sampled


class SurfaceSamples(NamedTuple):
    features: Tensor  # [N, feature_dim] style features of visible surface points
    colours: Tensor  # [N, 3] their original-style colour as rendered


class FeaturePlane(NamedTuple):
    """The plane of feature space that the pictures show: origin + axes @ (x, y)."""

    origin: Tensor  # [D]
    axes: Tensor  # [D, 2] orthonormal columns

    @staticmethod
    def of(samples: list[Tensor], feature_dim: int) -> FeaturePlane:
        """The feature plane itself for 2 dimensions; else the principal plane of the samples [N_i, D]."""
        if feature_dim == 2:
            return FeaturePlane(torch.zeros(2), torch.eye(2))
        points = torch.cat(samples).double() if samples else torch.zeros(0, feature_dim, dtype=torch.float64)
        if len(points) < 3:
            return FeaturePlane(torch.zeros(feature_dim), torch.eye(feature_dim)[:, :2])
        mean = points.mean(dim=0)
        _, _, vh = torch.linalg.svd(points - mean, full_matrices=False)
        return FeaturePlane(mean.float(), vh[:2].T.float().contiguous())

    def project(self, features: Tensor) -> Tensor:  # [N, D] -> [N, 2]
        return (features - self.origin) @ self.axes

    def lift(self, points: Tensor) -> Tensor:  # [N, 2] -> [N, D]
        return self.origin.to(points.device) + points @ self.axes.to(points.device).T


@torch.no_grad()
def surface_samples(run: LoadedRun, scene: str, views: int = VIEWS) -> SurfaceSamples:
    """Features of the points where a scene's training rays hit a surface (opacity > 0.95)."""
    built, data = run.built, run.config.data
    pairing = Pairing(scene, ORIGINAL)  # the scene's original-style data
    split = load_scene_split(data, scene, data.dataset(pairing), "train")
    background = torch.zeros(3, device=built.device)
    chosen = torch.linspace(0, len(split) - 1, min(views, len(split))).round().long()
    features, colours = [], []
    for index in chosen.tolist():
        rays_o, rays_d = image_rays(split.poses[index].to(built.device), split.camera)
        result = built.render_chunked(pairing, rays_o, rays_d, background)
        hit, points = result.surface(rays_o, rays_d, OPAQUE)
        if not hit.any():
            continue
        _, feature = built.model.features(scene, points, rays_d[hit])
        features.append(feature.cpu())
        colours.append(result.rgb[hit].cpu())
    if not features:
        return SurfaceSamples(torch.empty(0, built.model.feature_dim), torch.empty(0, 3))
    return SurfaceSamples(torch.cat(features), torch.cat(colours))


@torch.no_grad()
def decoder_map(run: LoadedRun, style: str, plane: FeaturePlane | None = None, pixels: int = PLANE_PIXELS) -> np.ndarray:
    """A style decoder over [-1, 1]^2 of `plane` (x left to right, y bottom to top): [P, P, 3] uint8.

    Without a plane, the feature plane itself (x = first feature, y = second). A decoder that reads
    the normal is drawn at none (JointModel.on_plane).
    """
    model = run.built.model
    plane = plane or FeaturePlane.of([], model.feature_dim)
    decoder = model.decoders[style]
    return plane_image(lambda p: decoder(model.on_plane(plane.lift(p))), pixels, run.built.device)


def plane_points(pixels: int, device: torch.device | str = "cpu") -> Tensor:  # [P*P, 2]
    """The feature plane [-1, 1]^2 as P x P points, row-major, the first row at feature y = +1."""
    axis = torch.linspace(-1.0, 1.0, pixels, device=device)
    f1, f0 = torch.meshgrid(-axis, axis, indexing="ij")  # rows run from +1 (top) to -1
    return torch.stack([f0.reshape(-1), f1.reshape(-1)], dim=-1)


@torch.no_grad()
def plane_image(
    decoder: torch.nn.Module | Callable[[Tensor], Tensor], pixels: int = PLANE_PIXELS, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Any decoder over the feature plane, as `decoder_map` draws it: [P, P, 3] uint8."""
    rgb = decoder(plane_points(pixels, device)).reshape(pixels, pixels, 3)
    return (rgb.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def scatter(background: np.ndarray, samples: SurfaceSamples, max_points: int = 4000) -> np.ndarray:
    """The samples drawn as dots (dark rim, own colour) over a faded feature-plane map."""
    image = (background.astype(np.float64) * 0.35 + 255 * 0.65).astype(np.uint8)
    pixels = image.shape[0]
    if len(samples.features) == 0:
        return image
    step = max(1, math.ceil(len(samples.features) / max_points))
    features, colours = samples.features[::step].numpy(), samples.colours[::step].numpy()
    cols = np.clip(((features[:, 0] + 1) / 2 * (pixels - 1)).round().astype(int), 0, pixels - 1)
    rows = np.clip(((1 - features[:, 1]) / 2 * (pixels - 1)).round().astype(int), 0, pixels - 1)
    for radius, colour in ((2, None), (1, "own")):
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                r, c = np.clip(rows + dr, 0, pixels - 1), np.clip(cols + dc, 0, pixels - 1)
                image[r, c] = 40 if colour is None else (colours * 255 + 0.5).astype(np.uint8)
    return image


def side_by_side(panels: dict[str, np.ndarray], gap: int = 8, title_height: int = 16) -> np.ndarray:
    """Panels in a row, each under its title."""
    parts = []
    for title, image in panels.items():
        canvas = Image.new("RGB", (image.shape[1], image.shape[0] + title_height), "white")
        canvas.paste(Image.fromarray(image), (0, title_height))
        ImageDraw.Draw(canvas).text((4, 2), title, fill="black")
        parts += [np.asarray(canvas), np.full((image.shape[0] + title_height, gap, 3), 255, dtype=np.uint8)]
    return np.concatenate(parts[:-1], axis=1)
