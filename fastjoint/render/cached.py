"""The style-free part of a render, cached: packed sample weights and features.

Marching and the scene's encoder decide where each ray's colour comes from (the samples'
compositing weights) and what each sample looks like in the shared feature space; a style
decoder only turns features into colour. Caching the first part lets a new decoder be
trained (`restyle`) or swapped in (the viewer) by running only the decoder:
`rgb = sum_i w_i * decode(f_i) + (1 - opacity) * background`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from fastjoint.ops._torch_impl import _sample_weights
from fastjoint.render.samplers import Sampler

# (points [N, 3], dirs [N, 3]) -> (sigma [N], feature [N, feature_dim]): a scene's encoder.
FeatureField = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

# (points [N, 3], sigma [N], feature [N, feature_dim]) -> [N, decoder inputs]: what a decoder reads there.
DecoderInputs = Callable[[Tensor, Tensor, Tensor], Tensor]

# Samples whose weight is below this add nothing visible to any colour and are dropped.
MIN_WEIGHT = 1e-4


class SampleCache(NamedTuple):
    """Packed samples of `n_rays` rays with their weights and features (no gradients)."""

    ray_indices: Tensor  # [S] int64, sorted
    weights: Tensor  # [S] compositing weights
    features: Tensor  # [S, decoder inputs] what the decoders read: the style feature, then the normal where they read it
    opacity: Tensor  # [n_rays] sum of every sample's weight (dropped ones included)
    n_rays: int

    @property
    def n_samples(self) -> int:
        return int(self.ray_indices.shape[0])

    def to(self, device: torch.device) -> SampleCache:
        return SampleCache(
            self.ray_indices.to(device), self.weights.to(device), self.features.to(device), self.opacity.to(device), self.n_rays
        )


@torch.no_grad()
def cache_samples(
    field: FeatureField,
    sampler: Sampler,
    rays_o: Tensor,  # [n_rays, 3]
    rays_d: Tensor,  # [n_rays, 3], unit length
    min_weight: float = MIN_WEIGHT,
    inputs: DecoderInputs | None = None,
) -> SampleCache:
    """Marches the rays once and keeps, per sample that matters, its weight and feature, or with `inputs`
    what the decoders read there (computed for the kept samples only)."""
    samples = sampler(rays_o, rays_d, None)
    ray_indices = samples.ray_indices.long()
    n_rays = rays_o.shape[0]
    t_mids = (samples.t_starts + samples.t_ends)[:, None] * 0.5
    dirs = rays_d.index_select(0, ray_indices)
    points = rays_o.index_select(0, ray_indices) + dirs * t_mids
    sigmas, features = field(points, dirs)
    weights = _sample_weights(sigmas, samples.t_starts, samples.t_ends, ray_indices, n_rays)
    opacity = torch.zeros(n_rays, dtype=weights.dtype, device=weights.device).index_add(0, ray_indices, weights)
    keep = weights > min_weight
    features = features[keep] if inputs is None else inputs(points[keep], sigmas[keep], features[keep])
    return SampleCache(ray_indices[keep], weights[keep], features, opacity, n_rays)


def concat_caches(parts: list[SampleCache]) -> SampleCache:
    """The caches of consecutive chunks of rays as one cache."""
    shifts, total = [], 0
    for part in parts:
        shifts.append(total)
        total += part.n_rays
    device = parts[0].weights.device
    return SampleCache(
        torch.cat([p.ray_indices + s for p, s in zip(parts, shifts, strict=True)])
        if parts
        else torch.empty(0, dtype=torch.long, device=device),
        torch.cat([p.weights for p in parts]),
        torch.cat([p.features for p in parts]),
        torch.cat([p.opacity for p in parts]),
        total,
    )


def composite_cached(
    cache: SampleCache,
    rgbs: Tensor,  # [S, 3] the decoded colour of each cached sample
    background: Tensor,  # [n_rays, 3] or [3]
) -> Tensor:  # [n_rays, 3]
    """Colour per ray from the cached weights: sum_i w_i c_i + (1 - opacity) * background.

    Differentiable in `rgbs` (and so in the decoder that made them).
    """
    rgb = torch.zeros(cache.n_rays, 3, dtype=rgbs.dtype, device=rgbs.device)
    rgb = rgb.index_add(0, cache.ray_indices, cache.weights[:, None] * rgbs)
    return rgb + (1.0 - cache.opacity)[:, None] * background


def ray_offsets(cache: SampleCache) -> Tensor:  # [n_rays + 1] int64
    """Where each ray's samples begin: ray r holds samples offsets[r]:offsets[r+1]."""
    return torch.searchsorted(cache.ray_indices, torch.arange(cache.n_rays + 1, device=cache.ray_indices.device))


def select_rays(cache: SampleCache, rays: Tensor, offsets: Tensor | None = None) -> SampleCache:
    """The cache of a subset of its rays, `rays` [B] int64, in that order and renumbered 0..B-1.

    `offsets` (from `ray_offsets`) saves recomputing them when selecting many times.
    """
    offsets = ray_offsets(cache) if offsets is None else offsets
    starts, counts = offsets[rays], offsets[rays + 1] - offsets[rays]
    local = torch.repeat_interleave(torch.arange(rays.shape[0], device=rays.device), counts)
    first = torch.cumsum(counts, 0) - counts  # where each chosen ray begins in the new pack
    index = starts.index_select(0, local) + torch.arange(local.shape[0], device=rays.device) - first.index_select(0, local)
    return SampleCache(local, cache.weights[index], cache.features[index], cache.opacity[rays], int(rays.shape[0]))
