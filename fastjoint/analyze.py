"""The paper's diagnostics of the shared 2-D feature space: RUN/analysis/.

- decoders.png: each style decoder drawn over the feature plane [-1, 1]^2 (the "material map");
- features.png: the features of each scene's visible surface points scattered on that plane,
  over the original decoder's map, each point in its rendered original-style colour;
- coverage.png: the target's test views in its original style with the pixels whose style
  feature the reference does not cover in magenta, beside the feature plane with the covered
  region outlined and both scenes' features on it (fastjoint.coverage);
- analysis.json: a bivariate normal fitted to each scene's features and the closed-form KL
  divergence between them (the paper's measure of whether the encoders share the space), and
  the target's uncovered share.

With `model.feature_dim` above 2 the plane drawn is the features' principal plane (the two
main axes of both scenes' surface features, through their mean), and the fits and the KL
are in all the feature's dimensions.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from fastjoint.coverage import Coverage, Share, coverage_picture, reference_features, target_share, target_views
from fastjoint.files import write_image, write_json
from fastjoint.pairing import ORIGINAL, SCENES, Pairing
from fastjoint.plane import FeaturePlane, SurfaceSamples, decoder_map, scatter, side_by_side, surface_samples
from fastjoint.run import LoadedRun, load_run

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


class AnalysisResult(NamedTuple):
    """What analysis.json holds."""

    step: int
    points: dict[str, int]  # scene -> surface points sampled
    fits: dict[str, Gaussian]  # scene -> fitted normal (empty when a scene has too few points)
    kl_target_reference: float | None  # KL(target || reference) in nats
    kl_reference_target: float | None
    plane: FeaturePlane | None = None  # the plane the pictures show
    coverage: Share | None = None  # the target's uncovered share (None: too little of the reference seen)

    def to_json(self) -> dict:
        kl = None
        if self.kl_target_reference is not None and self.kl_reference_target is not None:
            forward, backward = self.kl_target_reference, self.kl_reference_target
            kl = {"target||reference": forward, "reference||target": backward, "symmetric": (forward + backward) / 2}
        fits = {s: {"mean": f.mean.tolist(), "cov": f.cov.tolist()} for s, f in self.fits.items()}
        table = {"step": self.step, "points": self.points, "fits": fits, "kl": kl}
        if self.plane is not None:
            table["plane"] = {"origin": self.plane.origin.tolist(), "axes": self.plane.axes.tolist()}
        table["coverage"] = None if self.coverage is None else self.coverage.to_json()
        return table


def analyze(run_dir: str | Path, device: str | None = None, run: LoadedRun | None = None) -> AnalysisResult:
    """Writes RUN/analysis/{decoders,features,coverage}.png and RUN/analysis.json."""
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
    share = draw_coverage(run, folder / "coverage.png", maps[ORIGINAL] if dim == 2 else None)
    result = AnalysisResult(run.step, {s: len(samples[s].features) for s in SCENES}, fits, forward, backward, plane, share)
    write_json(run_dir / "analysis.json", result.to_json())
    return result


def draw_coverage(run: LoadedRun, path: Path, plane_map: np.ndarray | None) -> Share | None:
    """Writes the coverage picture (fastjoint.coverage.coverage_picture) to `path`; returns the target's uncovered share.

    `plane_map`: the original decoder over the feature plane (None for a feature of more than 2
    dimensions: the picture shows the views alone). Nothing is written when too little of the
    reference is seen to say what it covers.
    """
    reference = reference_features(run)
    coverage = Coverage.of(reference.features)
    share, masks = target_share(run, coverage)
    if share is None:  # (None exactly when there is no coverage)
        return None
    split, _ = target_views(run)
    views = [(image.numpy() * 255 + 0.5).astype(np.uint8) for image in run.render(Pairing("target", ORIGINAL), split.poses, split.camera)]
    plane = target = None
    if plane_map is not None:
        features = torch.cat([m.features for m in masks])
        with torch.no_grad():
            points = run.built.model.on_plane(features.to(run.built.device))  # drawn on the plane map: at no normal
            colours = run.built.decoder(ORIGINAL)(points).clamp(0, 1).float().cpu()
        plane, target = (coverage.table(), plane_map), SurfaceSamples(features, colours)
    write_image(path, coverage_picture(views, masks, share.split, plane, reference, target))
    return share
