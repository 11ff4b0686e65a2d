"""Coverage: where the analogy is extrapolated.

A desired style's decoder learns colours only at the style features of the reference's
surface (its photos are of the reference alone). Where the target's surface has a feature
the reference never shows, the transfer reads the decoder where nothing trained it: it
extrapolates. This module says where.

- The **reference's surface features**: the pixels of `plane.VIEWS` of the reference's
  training views whose opacity passes `plane.OPAQUE`, each pixel's feature the mean of its
  samples' features weighted by their compositing weights (`pixel_features`; for a solid
  surface, the feature where the ray meets it). The same definition gives the target's
  pixels, so both sides are measured alike, under either renderer.
- **Covered** (`Coverage`): a Gaussian kernel density estimate of those features (up to
  `KDE_POINTS` of them, drawn with a fixed generator; Scott's bandwidth per axis,
  n^(-1/(d+4)) times the features' standard deviation along that axis) is at least the level
  that keeps `1 - UNCOVERED_QUANTILE` (99%) of the reference's own features covered (the
  1st percentile of the density at each reference feature, leaving that feature out).
- The **share** (`target_share`): the fraction of the target's visible pixels (opacity past
  `plane.OPAQUE`) in its test views (its training views when it has no test split) whose
  feature is not covered.

`eval` reports the share beside each transfer and warns above `WARN_SHARE`; `analyze` draws
it (`coverage_picture`); the viewer overlays the same mask (`tint_uncovered`), reading the
density from a table over [-1, 1]^2 (`CoverageTable`) when the feature is 2-D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fastjoint.data import FORMATS, Split, detect_format, image_rays
from fastjoint.datasets import load_scene_split
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.plane import OPAQUE, PLANE_PIXELS, VIEWS, SurfaceSamples, scatter, side_by_side
from fastjoint.render import SampleCache
from fastjoint.run import Built, LoadedRun

UNCOVERED_QUANTILE = 0.01  # the share of the reference's own features left uncovered
KDE_POINTS = 4000  # reference features the density is made of (more cost time, not accuracy)
RAYS_PER_VIEW = 1 << 14  # reference pixels marched per training view, at most
MIN_SAMPLES = 20  # fewer reference features than this: no coverage (the reference is not seen)
WARN_SHARE = 0.05  # eval warns when more of the target's visible surface than this is uncovered
MIN_BANDWIDTH = 1e-3  # a feature axis the reference does not spread along still gets a kernel
CHUNK = 1 << 22  # query points x kernel points evaluated at once
MAGENTA = (255, 0, 255)
TINT = 0.65  # how much of an uncovered pixel's colour the mask replaces


def pixel_features(cache: SampleCache) -> tuple[Tensor, Tensor]:  # [n_rays], [n_rays, D]
    """Each ray's opacity and its feature: its samples' features averaged with their compositing weights.

    Rays without a kept sample get the zero feature (their opacity says they hit nothing).
    """
    dim = cache.features.shape[1]
    weights = torch.zeros(cache.n_rays, dtype=cache.weights.dtype, device=cache.weights.device)
    weights.index_add_(0, cache.ray_indices, cache.weights)
    summed = torch.zeros(cache.n_rays, dim, dtype=cache.features.dtype, device=cache.features.device)
    summed.index_add_(0, cache.ray_indices, cache.features * cache.weights[:, None].to(cache.features.dtype))
    return cache.opacity, summed / weights.clamp(min=1e-12)[:, None].to(summed.dtype)


def visible_uncovered(cache: SampleCache, covered: Callable[[Tensor], Tensor], dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rays' visibility (opacity past OPAQUE) and which visible ones `covered` (features [k, D] -> [k] bool)
    leaves out, [n_rays] bool each, and every ray's style feature [n_rays, D] (`pixel_features`' first `dim`
    numbers: a cache holds what the decoders read, the feature first)."""
    opacity, inputs = pixel_features(cache)
    features = inputs[:, :dim]
    visible = opacity > OPAQUE
    uncovered = torch.zeros_like(visible)
    uncovered[visible] = ~covered(features[visible])
    return visible, uncovered, features


def view_caches(
    cache_samples: Callable[[Tensor, Tensor], SampleCache],
    split: Split,
    generator: torch.Generator,
    device: torch.device | str,
    views: int = VIEWS,
    rays_per_view: int = RAYS_PER_VIEW,
) -> Iterator[SampleCache]:
    """The sample caches of `views` of `split`'s views, spread over them, up to `rays_per_view` random pixels
    each (drawn with `generator`); `cache_samples(rays_o, rays_d)` marches a scene's rays (`Built.cache_samples`)."""
    chosen = torch.linspace(0, len(split) - 1, min(views, len(split))).round().long()
    for index in chosen.tolist():
        rays_o, rays_d = image_rays(split.poses[index].to(device), split.camera)
        if rays_o.shape[0] > rays_per_view:
            keep = torch.randperm(rays_o.shape[0], generator=generator)[:rays_per_view].to(device)
            rays_o, rays_d = rays_o[keep], rays_d[keep]
        yield cache_samples(rays_o, rays_d)


@torch.no_grad()
def reference_features(run: LoadedRun, views: int = VIEWS, rays_per_view: int = RAYS_PER_VIEW) -> SurfaceSamples:
    """The features (and original-style colours) of the reference's visible pixels in `views` training views.

    Up to `rays_per_view` pixels of each view, drawn with a fixed generator.
    """
    built, data = run.built, run.config.data
    pairing = Pairing("reference", ORIGINAL)
    split = load_scene_split(data, "reference", data.dataset(pairing), "train")
    generator = torch.Generator().manual_seed(0)
    decoder = built.decoder(ORIGINAL)
    features, colours = [], []
    march = lambda o, d: built.cache_samples("reference", o, d)  # noqa: E731
    for cache in view_caches(march, split, generator, built.device, views, rays_per_view):
        opacity, inputs = pixel_features(cache)
        hit = opacity > OPAQUE
        features.append(inputs[hit, : built.model.feature_dim].float().cpu())
        colours.append(decoder(inputs[hit]).clamp(0, 1).float().cpu())
    return SurfaceSamples(torch.cat(features), torch.cat(colours))


class KernelDensity(NamedTuple):
    """A Gaussian kernel density estimate with a diagonal bandwidth."""

    points: Tensor  # [n, D] float64
    bandwidth: Tensor  # [D] float64

    @staticmethod
    def scott(samples: Tensor, max_points: int = KDE_POINTS, seed: int = 0) -> KernelDensity:
        """The density of `samples` [N, D] (at most `max_points` of them, drawn with a fixed generator), Scott's bandwidth."""
        points = samples.double().cpu()
        if len(points) > max_points:
            points = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:max_points]]
        n, dim = points.shape
        spread = points.std(dim=0) if n > 1 else torch.zeros(dim, dtype=torch.float64)
        return KernelDensity(points, (spread * n ** (-1.0 / (dim + 4))).clamp(min=MIN_BANDWIDTH))

    @property
    def peak(self) -> float:
        """One kernel's height at its centre."""
        dim = self.points.shape[1]
        return float(1.0 / ((2.0 * math.pi) ** (dim / 2) * self.bandwidth.prod()))

    def __call__(self, features: Tensor) -> Tensor:  # [N, D] -> [N] float64
        x = features.double().cpu() / self.bandwidth
        centres = self.points / self.bandwidth
        out = torch.empty(len(x), dtype=torch.float64)
        step = max(1, CHUNK // max(1, len(centres)))
        for start in range(0, len(x), step):
            squared = torch.cdist(x[start : start + step], centres).square()
            out[start : start + step] = torch.exp(-0.5 * squared).mean(dim=1)
        return out * self.peak

    def leave_one_out(self) -> Tensor:  # [n]
        """The density at each of its own points, that point's kernel left out."""
        n = len(self.points)
        return (self(self.points) * n - self.peak) / max(n - 1, 1)


class Coverage(NamedTuple):
    """Where the reference's surface features are: the density, and the level above which a feature is covered."""

    density: KernelDensity
    level: float
    samples: int  # reference features it was made from

    @staticmethod
    def of(samples: Tensor, quantile: float = UNCOVERED_QUANTILE) -> Coverage | None:
        """The coverage of reference features [N, D]: covered at the density that leaves `quantile` of them out.

        None with fewer than MIN_SAMPLES features (too little of the reference is seen).
        """
        if len(samples) < MIN_SAMPLES:
            return None
        density = KernelDensity.scott(samples)
        level = float(torch.quantile(density.leave_one_out(), quantile))
        return Coverage(density, level, len(samples))

    def covered(self, features: Tensor) -> Tensor:  # [N, D] -> [N] bool
        return self.density(features) >= self.level

    def table(self, pixels: int = PLANE_PIXELS) -> CoverageTable:
        """The density on a P x P grid over [-1, 1]^2 (a 2-D feature only), for pictures and the viewer.

        Made as a binned estimate: the points spread over the grid's nodes (linear binning), then
        blurred by the kernel, one axis at a time; a few hundredths of a second where the direct
        sum over every node and point takes seconds, and equal to it but for the binning (a node
        spacing of 2 / (P - 1), a small fraction of a bandwidth).
        """
        points, bandwidth = self.density.points, self.density.bandwidth
        assert points.shape[1] == 2, f"a coverage table needs 2-D features, got {tuple(points.shape)}"
        spacing = 2.0 / (pixels - 1)
        column = ((points[:, 0] + 1.0) / spacing).clamp(0, pixels - 1)
        row = ((1.0 - points[:, 1]) / spacing).clamp(0, pixels - 1)  # row 0 at feature y = +1
        left, top = column.floor().clamp(max=pixels - 2), row.floor().clamp(max=pixels - 2)
        right_share, bottom_share = column - left, row - top
        counts = torch.zeros(pixels * pixels, dtype=torch.float64)
        for dr, wr in ((0, 1.0 - bottom_share), (1, bottom_share)):
            for dc, wc in ((0, 1.0 - right_share), (1, right_share)):
                counts.index_add_(0, ((top + dr) * pixels + left + dc).long(), wr * wc)
        density = counts.reshape(1, 1, pixels, pixels)
        for axis, h in ((3, float(bandwidth[0])), (2, float(bandwidth[1]))):  # columns are feature x, rows feature y
            sigma = h / spacing
            radius = min(pixels - 1, math.ceil(4.0 * sigma))
            offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
            kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
            shape, padding = ((1, 1, 1, -1), (0, radius)) if axis == 3 else ((1, 1, -1, 1), (radius, 0))
            density = torch.nn.functional.conv2d(density, kernel.reshape(shape), padding=padding)
        density = density[0, 0] * self.density.peak / len(points)
        return CoverageTable(density.float(), self.level)


class CoverageTable(NamedTuple):
    """A 2-D feature's coverage as a table: the density over [-1, 1]^2, read bilinearly.

    Rows run from feature y = +1 (top) to -1, as `plane.plane_points` and the pictures do.
    """

    density: Tensor  # [P, P]
    level: float

    @property
    def mask(self) -> Tensor:  # [P, P] bool, True where covered
        return self.density >= self.level

    def covered(self, features: Tensor) -> Tensor:  # [N, 2] -> [N] bool
        table = self.density.to(features.device)[None, None]
        # grid_sample's y runs down the rows, from -1 (first row) to +1: ours runs the other way.
        grid = torch.stack([features[:, 0], -features[:, 1]], dim=-1).clamp(-1, 1).reshape(1, 1, -1, 2).to(table.dtype)
        read = torch.nn.functional.grid_sample(table, grid, mode="bilinear", align_corners=True)[0, 0, 0]
        return read >= self.level


def reference_coverage(run: LoadedRun) -> Coverage | None:
    """The coverage of a run's reference (None when too little of it is seen)."""
    return Coverage.of(reference_features(run).features)


def target_views(run: LoadedRun) -> tuple[Split, str]:
    """The target's views the share is measured on: its test split, or its training split when it has none."""
    data = run.config.data
    dataset = data.dataset(Pairing("target", ORIGINAL))
    split_file = FORMATS[detect_format(dataset)].split_file
    which = "test" if split_file is None or split_file(dataset, "test").is_file() else "train"
    return load_scene_split(data, "target", dataset, which), which


class ViewCoverage(NamedTuple):
    """One view's pixels: which are visible and which of those are uncovered ([H, W] bool each), and the visible ones' features."""

    visible: Tensor
    uncovered: Tensor
    features: Tensor  # [k, D], the visible pixels' in row-major order


class Share(NamedTuple):
    """The share of the target's visible surface that is uncovered."""

    share: float  # uncovered visible pixels / visible pixels
    visible: int  # visible pixels counted
    views: int
    split: str  # "test" or "train"
    reference_samples: int  # reference features the coverage was made from

    @property
    def large(self) -> bool:
        return self.share > WARN_SHARE

    def to_json(self) -> dict:
        return {**self._asdict(), "share": round(self.share, 6), "warn_above": WARN_SHARE}


@torch.no_grad()
def view_coverage(built: Built, coverage: Coverage, pose: Tensor, camera) -> ViewCoverage:
    """A target view's visible and uncovered pixels."""
    rays_o, rays_d = image_rays(pose.to(built.device), camera)
    cache = built.cache_samples("target", rays_o, rays_d)
    visible, uncovered, features = visible_uncovered(cache, coverage.covered, built.model.feature_dim)
    visible, uncovered, features = visible.cpu(), uncovered.cpu(), features.float().cpu()
    shape = (camera.height, camera.width)
    return ViewCoverage(visible.reshape(shape), uncovered.reshape(shape), features[visible])


def target_share(run: LoadedRun, coverage: Coverage | None) -> tuple[Share | None, list[ViewCoverage]]:
    """The uncovered share of the target's visible surface in its test (else training) views, and each view's pixels."""
    if coverage is None:
        return None, []
    split, which = target_views(run)
    masks = [view_coverage(run.built, coverage, pose, split.camera) for pose in split.poses]
    visible = sum(int(m.visible.sum()) for m in masks)
    uncovered = sum(int(m.uncovered.sum()) for m in masks)
    share = uncovered / visible if visible else 0.0
    return Share(share, visible, len(masks), which, coverage.samples), masks


def warning(share: Share) -> str:
    """The one line eval prints when the share is large."""
    return (
        f"{share.share:.1%} of the target's visible surface ({share.split} views) has style features the reference "
        f"does not cover (over {WARN_SHARE:.0%}): the transfers extrapolate there; see RUN/analysis/coverage.png"
    )


# --- pictures -------------------------------------------------------------------------


def tint_uncovered(image: np.ndarray, uncovered: np.ndarray) -> np.ndarray:
    """`image` [H, W, 3] uint8 with the `uncovered` [H, W] pixels tinted magenta."""
    out = image.astype(np.float64)
    out[uncovered] = out[uncovered] * (1.0 - TINT) + np.array(MAGENTA) * TINT
    return (out + 0.5).clip(0, 255).astype(np.uint8)


def outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """`image` [P, P, 3] with the edge of `mask` [P, P] (covered pixels next to uncovered ones) drawn in `colour`."""
    edge = np.zeros_like(mask)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[1:] != mask[:-1]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, 1:] != mask[:, :-1]
    out = image.copy()
    out[edge & mask] = colour
    return out


def tile(images: list[np.ndarray], height: int = PLANE_PIXELS, columns: int = 4) -> np.ndarray:
    """Views in rows of `columns`, scaled to `height` pixels high in all (nearest neighbour when enlarged)."""
    h, w = images[0].shape[:2]
    columns = min(columns, len(images))
    rows = [images[i : i + columns] for i in range(0, len(images), columns)]
    blank = np.full((h, w, 3), 255, dtype=np.uint8)
    grid = np.concatenate([np.concatenate(row + [blank] * (columns - len(row)), axis=1) for row in rows], axis=0)
    scale = height / grid.shape[0]
    size = (max(1, round(grid.shape[1] * scale)), height)
    resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
    return np.asarray(Image.fromarray(grid).resize(size, resample))


def coverage_picture(
    views: list[np.ndarray],  # [H, W, 3] uint8 each: the target's views in its original style
    masks: list[ViewCoverage],
    split: str,
    plane: tuple[CoverageTable, np.ndarray] | None = None,  # the coverage table and the original decoder's map [P, P, 3] uint8
    reference: SurfaceSamples | None = None,  # the reference's features, drawn on the plane
    target: SurfaceSamples | None = None,  # the target's visible features, in the masks' order
) -> np.ndarray:
    """The target's views with uncovered pixels in magenta, beside (a 2-D feature only: `plane`) the feature
    plane with the covered region outlined, the reference's features in their colours and the target's
    (uncovered ones in magenta)."""
    tinted = [tint_uncovered(view, mask.uncovered.numpy()) for view, mask in zip(views, masks, strict=True)]
    panels = {f"target {split} views, uncovered in magenta": tile(tinted)}
    if plane is not None and reference is not None and target is not None:
        table, plane_map = plane
        covered = table.mask.numpy()
        target_uncovered = torch.cat([m.uncovered[m.visible] for m in masks])
        panels["reference features, covered outlined"] = outline(scatter(plane_map, reference), covered)
        colours = target.colours.clone()
        colours[target_uncovered] = torch.tensor(MAGENTA, dtype=colours.dtype) / 255.0
        panels["target features, uncovered magenta"] = outline(scatter(plane_map, SurfaceSamples(target.features, colours)), covered)
    return side_by_side(panels)
