"""Recolouring a material picked in the view.

A click in the viewer names a ray. The material under it is the style feature of the
first surface that ray meets: the feature of the sample at which the ray's accumulated
compositing weight first passes one half (`surface_features`). A `Recolour` then blends a
style's colours toward a colour with the weight exp(-d^2 / (2 r^2)), d the distance in the
feature plane to the picked feature and r the falloff, which the user widens to take in
more of the material's shades (`recoloured`). Keeping the shading, the colour each feature
is blended toward is the picked colour times the feature's luminance over the luminance
at the picked feature: the picked spot takes the colour, the material's darker and
brighter shades follow it. Under the fast renderer a style is a lookup
table over the feature plane, so a recolour is an edit of that table
(`DecoderTable.edited`); under the exact renderer, and for decoders that read the normal
(which have no table), the same blend runs on each sample's decoded colour
(`RecolouredDecoder`), by the distance of the sample's feature (the first two numbers of
what the decoder reads). Either way the frame is recomposed from its cached
samples: no march.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fastjoint.render import SampleCache
from fastjoint.render.cached import ray_offsets
from fastjoint.run import Built

SURFACE_WEIGHT = 0.5  # a ray meets its first surface where its accumulated weight passes this
LUMINANCE = (0.2126, 0.7152, 0.0722)  # Rec. 709 weights of R, G and B
MIN_SHADE = 1e-3  # the luminance a shade is measured against at least (a black pick keeps the colour flat)


class Recolour(NamedTuple):
    """A material recoloured: colours near a picked feature blended toward a colour."""

    centre: tuple[float, float]  # the picked material's feature, in [-1, 1]^2
    radius: float  # the falloff r, feature units: weight exp(-d^2 / (2 r^2)) at distance d
    colour: tuple[float, float, float]  # RGB in [0, 1]
    shade: float = 1.0  # the style's luminance at `centre` when picked
    keep_shading: bool = False  # blend toward colour x luminance / shade instead of the flat colour


def luminance(colours: Tensor) -> Tensor:  # [N, 3] -> [N]
    return colours @ torch.tensor(LUMINANCE, dtype=colours.dtype, device=colours.device)


def falloff(
    points: Tensor,  # [N, 2] features (or decoder inputs, the feature first)
    recolour: Recolour,
) -> Tensor:  # [N] in [0, 1]
    """How much of the recolour's colour each feature takes: exp(-d^2 / (2 r^2))."""
    centre = torch.tensor(recolour.centre, dtype=points.dtype, device=points.device)
    squared = (points[:, : centre.shape[0]] - centre).square().sum(dim=-1)
    return torch.exp(-squared / (2.0 * recolour.radius**2))


def recoloured(
    colours: Tensor,  # [N, 3] a style's colours of `points`
    points: Tensor,  # [N, 2] features (or decoder inputs, the feature first)
    recolours: Sequence[Recolour],
) -> Tensor:  # [N, 3]
    """The colours with each recolour blended over them, in order."""
    for recolour in recolours:
        weight = falloff(points, recolour)[:, None]
        paint = torch.tensor(recolour.colour, dtype=colours.dtype, device=colours.device)
        if recolour.keep_shading:
            paint = (paint * (luminance(colours) / max(recolour.shade, MIN_SHADE))[:, None]).clamp(0.0, 1.0)
        colours = colours * (1.0 - weight) + paint * weight
    return colours


class RecolouredDecoder(nn.Module):
    """A decoder with recolours over it (what the viewer shows until the edits are fitted and saved)."""

    def __init__(self, decoder: nn.Module, recolours: Sequence[Recolour]) -> None:
        super().__init__()
        self.decoder = decoder
        self.recolours = tuple(recolours)

    @property
    def inputs(self) -> int:
        """How many numbers the decoder reads."""
        return self.decoder.inputs

    def forward(self, inputs: Tensor) -> Tensor:  # [N, decoder inputs] -> [N, 3]
        return recoloured(self.decoder(inputs), inputs, self.recolours)


def surface_features(
    cache: SampleCache,
    threshold: float = SURFACE_WEIGHT,
) -> tuple[Tensor, Tensor]:  # features [n_rays, D], hit [n_rays] bool
    """Each ray's feature at its first surface: the sample at which its accumulated weight first passes `threshold`.

    A ray whose opacity never gets there met no surface (`hit` False, its feature zero).
    """
    n_rays, dim = cache.n_rays, cache.features.shape[1]
    device = cache.weights.device
    features = torch.zeros(n_rays, dim, dtype=cache.features.dtype, device=device)
    hit = torch.zeros(n_rays, dtype=torch.bool, device=device)
    if cache.n_samples == 0:
        return features, hit
    total = torch.cumsum(cache.weights.double(), 0)
    offsets = ray_offsets(cache)
    before = torch.cat([total.new_zeros(1), total])[offsets[:-1]]  # the weight of the rays before each ray
    accumulated = total - before[cache.ray_indices]
    passed = (accumulated >= threshold).nonzero()[:, 0]
    if passed.shape[0] == 0:
        return features, hit
    first = torch.full((n_rays,), cache.n_samples, dtype=torch.long, device=device)
    first = first.scatter_reduce(0, cache.ray_indices[passed], passed, reduce="amin")
    hit = first < cache.n_samples
    features[hit] = cache.features[first[hit]]
    return features, hit


@torch.no_grad()
def pick_input(
    built: Built,
    scene: str,
    origin: Sequence[float],  # [3] world
    direction: Sequence[float],  # [3] world, any length
) -> tuple[float, ...] | None:
    """What the decoders read at the first surface a ray of `scene` meets (as the run renders it: the style
    feature, then the normal where they read it); None if it meets none."""
    rays_o = torch.tensor([list(origin)], dtype=torch.float32, device=built.device)
    rays_d = nn.functional.normalize(torch.tensor([list(direction)], dtype=torch.float32, device=built.device), dim=-1)
    inputs, hit = surface_features(built.cache_samples(scene, rays_o, rays_d))
    if not bool(hit[0]):
        return None
    return tuple(inputs[0].tolist())
