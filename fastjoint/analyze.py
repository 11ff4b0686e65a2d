"""The paper's diagnostics of the shared 2-D feature space: RUN/analysis/.

- decoders.png: each style decoder drawn over the feature plane [-1, 1]^2 (the "material map");
- features.png: the features of each scene's visible surface points scattered on that plane,
  over the original decoder's map, each point in its rendered original-style colour;
- analysis.json: a bivariate normal fitted to each scene's features and the closed-form KL
  divergence between them (the paper's measure of whether the encoders share the space).
"""

from __future__ import annotations

import math
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
    mean: Tensor  # [2] float64
    cov: Tensor  # [2, 2] float64


def fit_gaussian(points: Tensor) -> Gaussian:  # [N, 2] -> mean, covariance (+ ridge)
    """Maximum-likelihood bivariate normal of a point cloud (unbiased covariance)."""
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
    features: Tensor  # [N, 2] style features of visible surface points
    colours: Tensor  # [N, 3] their original-style colour as rendered


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
        hit = result.opacity > OPAQUE
        if not hit.any():
            continue
        points = rays_o[hit] + rays_d[hit] * (result.depth[hit] / result.opacity[hit])[:, None]
        _, feature = built.model.features(scene, points, rays_d[hit])
        features.append(feature.cpu())
        colours.append(result.rgb[hit].cpu())
    if not features:
        return SurfaceSamples(torch.empty(0, 2), torch.empty(0, 3))
    return SurfaceSamples(torch.cat(features), torch.cat(colours))


@torch.no_grad()
def decoder_map(run: LoadedRun, style: str, pixels: int = PLANE_PIXELS) -> np.ndarray:  # [P, P, 3] uint8
    """A style decoder over [-1, 1]^2: x = first feature (left to right), y = second (bottom to top)."""
    return plane_image(run.built.model.decoders[style], pixels, run.built.device)


def plane_points(pixels: int, device: torch.device | str = "cpu") -> Tensor:  # [P*P, 2]
    """The feature plane [-1, 1]^2 as P x P points, row-major, the first row at feature y = +1."""
    axis = torch.linspace(-1.0, 1.0, pixels, device=device)
    f1, f0 = torch.meshgrid(-axis, axis, indexing="ij")  # rows run from +1 (top) to -1
    return torch.stack([f0.reshape(-1), f1.reshape(-1)], dim=-1)


@torch.no_grad()
def plane_image(decoder: torch.nn.Module, pixels: int = PLANE_PIXELS, device: torch.device | str = "cpu") -> np.ndarray:
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

    def to_json(self) -> dict:
        kl = None
        if self.kl_target_reference is not None and self.kl_reference_target is not None:
            forward, backward = self.kl_target_reference, self.kl_reference_target
            kl = {"target||reference": forward, "reference||target": backward, "symmetric": (forward + backward) / 2}
        fits = {s: {"mean": f.mean.tolist(), "cov": f.cov.tolist()} for s, f in self.fits.items()}
        return {"step": self.step, "points": self.points, "fits": fits, "kl": kl}


def analyze(run_dir: str | Path, device: str | None = None, run: LoadedRun | None = None) -> AnalysisResult:
    """Writes RUN/analysis/{decoders,features}.png and RUN/analysis.json."""
    run_dir = Path(run_dir)
    run = run or load_run(run_dir, device)
    folder = run_dir / "analysis"
    folder.mkdir(parents=True, exist_ok=True)

    styles = run.pairings.styles
    maps = {style: decoder_map(run, style) for style in styles}
    write_image(folder / "decoders.png", side_by_side({f"decoder {s}": maps[s] for s in styles}))
    samples = {scene: surface_samples(run, scene) for scene in SCENES}
    write_image(
        folder / "features.png",
        side_by_side({f"{s} features on decoder {ORIGINAL}": scatter(maps[ORIGINAL], samples[s]) for s in SCENES}),
    )
    fits: dict[str, Gaussian] = {}
    forward = backward = None
    if all(len(samples[s].features) > 2 for s in SCENES):
        fits = {s: fit_gaussian(samples[s].features) for s in SCENES}
        forward = kl_divergence(fits["target"], fits["reference"])
        backward = kl_divergence(fits["reference"], fits["target"])
    result = AnalysisResult(run.step, {s: len(samples[s].features) for s in SCENES}, fits, forward, backward)
    write_json(run_dir / "analysis.json", result.to_json())
    return result
