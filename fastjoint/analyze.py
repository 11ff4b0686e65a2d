"""The paper's diagnostics of the shared 2-D feature space: RUN/analysis/.

- decoders.png: each style decoder drawn over the feature plane [-1, 1]^2 (the "material map");
- features.png: the features of each scene's visible surface points scattered on that plane,
  over the original decoder's map, each point in its rendered original-style colour;
- analysis.json: a bivariate normal fitted to each scene's features and the closed-form KL
  divergence between them (the paper's measure of whether the encoders share the space).

With `model.feature_dim` above 2 the plane drawn is the features' principal plane (the two
main axes of both scenes' surface features, through their mean), and the fits and the KL
are in all the feature's dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from fastjoint.data import image_rays, load_split
from fastjoint.files import write_image, write_json
from fastjoint.pairing import ORIGINAL, SCENES, Pairing
from fastjoint.run import LoadedRun, load_run

PLANE_PIXELS = 256  # side of each drawn feature plane
OPAQUE = 0.95  # a ray whose opacity passes this has hit a surface
VIEWS = 12  # training views per scene whose surface points are sampled
RIDGE = 1e-6  # added to fitted covariances so that a collapsed feature cloud stays finite


class Gaussian(NamedTuple):
    mean: Tensor  # [D] float64
    cov: Tensor  # [D, D] float64


def fit_gaussian(points: Tensor) -> Gaussian:  # [N, D] -> mean, covariance (+ ridge)
    """Maximum-likelihood normal of a point cloud (unbiased covariance)."""
    x = points.double()
    mean = x.mean(dim=0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    return Gaussian(mean, cov + RIDGE * torch.eye(x.shape[1], dtype=torch.float64))


def kl_divergence(p: Gaussian, q: Gaussian) -> float:
    """KL(p || q) of two multivariate normals, in nats (closed form)."""
    k = p.mean.shape[0]
    q_inv = torch.linalg.inv(q.cov)
    delta = q.mean - p.mean
    trace = torch.trace(q_inv @ p.cov)
    mahalanobis = delta @ q_inv @ delta
    log_det = torch.logdet(q.cov) - torch.logdet(p.cov)
    return 0.5 * float(trace + mahalanobis - k + log_det)


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
    split = load_split(data.dataset(pairing), "train", data.downscale)
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

    Without a plane, the feature plane itself (x = first feature, y = second).
    """
    model = run.built.model
    plane = plane or FeaturePlane.of([], model.feature_dim)
    decoder = model.decoders[style]
    return plane_image(lambda p: decoder(plane.lift(p)), pixels, run.built.device)


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


class AnalysisResult(NamedTuple):
    """What analysis.json holds."""

    step: int
    points: dict[str, int]  # scene -> surface points sampled
    fits: dict[str, Gaussian]  # scene -> fitted normal (empty when a scene has too few points)
    kl_target_reference: float | None  # KL(target || reference) in nats
    kl_reference_target: float | None
    plane: FeaturePlane | None = None  # the plane the pictures show

    def to_json(self) -> dict:
        kl = None
        if self.kl_target_reference is not None and self.kl_reference_target is not None:
            forward, backward = self.kl_target_reference, self.kl_reference_target
            kl = {"target||reference": forward, "reference||target": backward, "symmetric": (forward + backward) / 2}
        fits = {s: {"mean": f.mean.tolist(), "cov": f.cov.tolist()} for s, f in self.fits.items()}
        table = {"step": self.step, "points": self.points, "fits": fits, "kl": kl}
        if self.plane is not None:
            table["plane"] = {"origin": self.plane.origin.tolist(), "axes": self.plane.axes.tolist()}
        return table


def analyze(run_dir: str | Path, device: str | None = None, run: LoadedRun | None = None) -> AnalysisResult:
    """Writes RUN/analysis/{decoders,features}.png and RUN/analysis.json."""
    run_dir = Path(run_dir)
    run = run or load_run(run_dir, device)
    folder = run_dir / "analysis"
    folder.mkdir(parents=True, exist_ok=True)

    styles = run.pairings.styles
    samples = {scene: surface_samples(run, scene) for scene in SCENES}
    dim = run.built.model.feature_dim
    plane = FeaturePlane.of([samples[s].features for s in SCENES], dim)
    where = "" if dim == 2 else " (principal plane)"
    maps = {style: decoder_map(run, style, plane) for style in styles}
    write_image(folder / "decoders.png", side_by_side({f"decoder {s}{where}": maps[s] for s in styles}))
    drawn = {s: SurfaceSamples(plane.project(samples[s].features), samples[s].colours) for s in SCENES}
    write_image(
        folder / "features.png",
        side_by_side({f"{s} features on decoder {ORIGINAL}{where}": scatter(maps[ORIGINAL], drawn[s]) for s in SCENES}),
    )
    fits: dict[str, Gaussian] = {}
    forward = backward = None
    if all(len(samples[s].features) > 2 for s in SCENES):
        fits = {s: fit_gaussian(samples[s].features) for s in SCENES}
        forward = kl_divergence(fits["target"], fits["reference"])
        backward = kl_divergence(fits["reference"], fits["target"])
    result = AnalysisResult(run.step, {s: len(samples[s].features) for s in SCENES}, fits, forward, backward, plane)
    write_json(run_dir / "analysis.json", result.to_json())
    return result
