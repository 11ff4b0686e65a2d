"""JointModel: an encoder per scene and a decoder per style, meeting in a 2-D feature space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fastjoint.model.decoder import StyleDecoder
from fastjoint.model.hashgrid import HashGrid
from fastjoint.model.head import FeatureHead
from fastjoint.pairing import ORIGINAL
from fastjoint.render.baked import BAKE_DIRECTIONS
from fastjoint.render.extent import contract

NORMAL_STEP = 0.03  # the normals' central difference, as a share of the scene box's longest side
NORMAL_MIN_SIGMA = 0.33  # a sample reads a normal where its density passes this (alpha 0.01 at the kit's step of 0.03); else 0


@torch.no_grad()
def normals_of(encoder: nn.Module, x: Tensor) -> Tensor:  # [N, 3] -> [N, 3] unit, outward
    """Minus the gradient of an encoder's log density at `x`, by central differences at NORMAL_STEP of its box."""
    h = NORMAL_STEP * encoder.box_side
    offsets = torch.eye(3, device=x.device) * h
    probes = torch.cat([x[:, None, :] + offsets, x[:, None, :] - offsets], dim=1).reshape(-1, 3)
    logit = encoder.log_density(probes).reshape(-1, 2, 3)
    grad = logit[:, 0] - logit[:, 1]
    return -grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-8)


def dense_normals(encoder: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:  # [N, 3], [N] -> [N, 3]
    """The normal a decoder reads at points `x` of density `sigma`: `normals_of` where the density passes
    NORMAL_MIN_SIGMA, else 0."""
    normal = torch.zeros_like(x)
    dense = sigma.detach() > NORMAL_MIN_SIGMA
    normal[dense] = normals_of(encoder, x[dense])
    return normal


class QueryResult(NamedTuple):
    sigma: Tensor  # [N] density
    rgb: Tensor  # [N, 3]
    feature: Tensor  # [N, feature_dim] the style feature, what the decoders see


class HashGridEncoder(nn.Module):
    """A scene's hash grid (positions normalised by the scene box) and a feature head.

    `contracted`: the scene is unbounded (fastjoint.render.extent): positions are contracted
    around `aabb`, which fills the grid's central half, and the rest of space its outer shell.
    """

    def __init__(self, grid: HashGrid, head: FeatureHead, aabb: Tensor, contracted: bool = False) -> None:
        super().__init__()
        self.grid = grid
        self.head = head
        self.contracted = contracted
        self.register_buffer("aabb", aabb.clone())
        # The box's centre and half-size, for the contraction (derived: not saved in checkpoints).
        self.register_buffer("box_centre", (aabb[3:] + aabb[:3]) / 2, persistent=False)
        self.register_buffer("box_half", (aabb[3:] - aabb[:3]) / 2, persistent=False)
        self.box_side = float((aabb[3:] - aabb[:3]).max())  # the box's longest side (the normals' step is a share of it)

    def _grid_features(self, x: Tensor) -> Tensor:
        if self.contracted:
            unit = (contract((x - self.box_centre) / self.box_half) * 0.25 + 0.5).clamp(0.0, 1.0)
        else:
            unit = ((x - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])).clamp(0.0, 1.0)
        return self.grid(unit)

    def density(self, x: Tensor) -> Tensor:  # [N, 3] world -> [N]
        sigma, _ = self.head.density(self._grid_features(x))
        return sigma

    def log_density(self, x: Tensor) -> Tensor:  # [N, 3] world -> [N]
        """The density before its exp activation (what the normals differentiate)."""
        logit, _ = self.head.density_logit(self._grid_features(x))
        return logit

    def baked_values(self, x: Tensor, view_dependent: bool, normals: bool = False) -> Tensor:  # [N, 3] world -> [N, C]
        """What a baked scene stores at a point (fastjoint.render.baked): the density before its exp
        activation, then the geometry features that the feature network reads with the view direction
        (`view_dependent`) or the style feature averaged over BAKE_DIRECTIONS, then with `normals` the
        normal a decoder reads there (`dense_normals`)."""
        logit, geometry = self.head.density_logit(self._grid_features(x))
        if not view_dependent:
            geometry = self.head.mean_feature(geometry, BAKE_DIRECTIONS.to(x.device))
        parts = [logit[:, None], geometry]
        if normals:
            parts.append(dense_normals(self, x, logit.exp()))
        return torch.cat(parts, dim=1)

    def feature_logits(self, x: Tensor, d: Tensor) -> Tensor:  # [N, 3], [N, 3] -> [N, dim]
        """The style feature before its tanh (the feature is its tanh)."""
        _, geometry = self.head.density_logit(self._grid_features(x))
        return self.head.feature_logit(geometry, d)

    def baked_feature(self, geometry: Tensor, ray_dirs: Tensor, rays: Tensor) -> Tensor:  # [N, geo], [R, 3], [N] -> [N, dim]
        """The style feature from baked geometry features, each seen along its ray's direction
        `ray_dirs[rays]` (the feature network, as `forward`)."""
        return self.head.feature_along_rays(geometry, ray_dirs, rays)

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:  # -> sigma [N], feature [N, dim]
        sigma, geometry = self.head.density(self._grid_features(x))
        return sigma, self.head.feature(geometry, d)


class JointModel(nn.Module):
    """An encoder per scene and a decoder per style; `query(scene, style, x, d)` pairs them.

    The encoders come from the run's architecture (fastjoint.architecture: hash grids with a
    shared head, or the research code's MLPs); they map world points and view directions to
    density and the style feature. The decoders turn features into colour, one per style,
    `original` first. The query splits into a style-free part, `features(scene, x, d)`, and
    `decode(style, inputs)`, so that a style swap re-runs only the decoder.

    With `decoder_normal` a decoder reads, after the feature, the surface normal: minus the
    gradient of the log density by central differences at NORMAL_STEP of the box, without
    gradient, where a sample's density passes NORMAL_MIN_SIGMA (else 0): [feature, normal]
    is what a decoder reads (`decoder_inputs` wide, `decoder_input`). Shading then need not be
    written into the feature plane, so a relit reference's photos are a function the decoder
    can represent (benchmarks/README.md, "Decoders that read the normal"). A picture of a
    decoder over the feature plane reads it at no normal (`on_plane`).

    Args:
        encoders: scene -> its encoder (`density(x)`, `log_density(x)`, `feature_logits(x, d)`,
            `box_side`, and `(x, d) -> (sigma, feature)`).
        styles: the styles to make decoders for, `original` first.
        feature_dim: the style feature's dimension.
        decoder_hidden: hidden width of each decoder.
        decoder_layers: hidden layers of each decoder.
        desired_shape_features: whether a desired style's colour loss reaches the encoders
            (the method); False: its decoder reads the feature as a constant.
        decoder_normal: whether the decoders also read the surface normal.
        mlp_backend: what runs the decoders' networks, those of decoders added later too
            (`new_decoder`).
    """

    def __init__(
        self,
        *,
        encoders: dict[str, nn.Module],
        styles: Sequence[str],
        feature_dim: int,
        decoder_hidden: int,
        decoder_layers: int = 1,
        desired_shape_features: bool = True,
        mlp_backend: str = "torch",
        decoder_normal: bool = False,
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.feature_dim = feature_dim
        self.decoder_hidden = decoder_hidden
        self.decoder_layers = decoder_layers
        self.desired_shape_features = desired_shape_features
        self.mlp_backend = mlp_backend
        self.decoder_normal = decoder_normal
        self.decoders = nn.ModuleDict({style: self.new_decoder() for style in styles})

    def new_decoder(self) -> StyleDecoder:
        """A freshly initialised decoder of this model's shape."""
        return StyleDecoder(self.decoder_inputs, self.decoder_hidden, self.decoder_layers, self.mlp_backend)

    def decoder_from_original(self) -> StyleDecoder:
        """A new decoder that starts as a copy of the `original` decoder, on its device."""
        original = self.decoders[ORIGINAL]
        decoder = self.new_decoder().to(next(original.parameters()).device)
        decoder.load_state_dict(original.state_dict())
        return decoder

    @property
    def decoder_inputs(self) -> int:
        """How many numbers a decoder reads: the feature, then the normal's 3 with `decoder_normal`."""
        return self.feature_dim + (3 if self.decoder_normal else 0)

    def density(self, scene: str, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return self.encoders[scene].density(x)

    def feature_logits(self, scene: str, x: Tensor, d: Tensor) -> Tensor:  # [N, 3], [N, 3] -> [N, feature_dim]
        """The style feature of points `x` seen along `d` before its tanh (the feature is its tanh)."""
        return self.encoders[scene].feature_logits(x, d)

    def decoder_input(self, scene: str, x: Tensor, sigma: Tensor, feature: Tensor) -> Tensor:  # -> [N, decoder_inputs]
        """What a decoder reads at points `x` of density `sigma` [N] and style feature `feature` [N, feature_dim]."""
        if not self.decoder_normal:
            return feature
        return torch.cat([feature, dense_normals(self.encoders[scene], x, sigma)], dim=1)

    def on_plane(self, points: Tensor) -> Tensor:  # [N, feature_dim] -> [N, decoder_inputs]
        """Points of the feature plane as a decoder reads them where there is no normal (0): what a picture of a
        decoder over the plane shows."""
        if not self.decoder_normal:
            return points
        return torch.cat([points, points.new_zeros(points.shape[0], 3)], dim=1)

    def features(self, scene: str, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """The style-free part of a query: density [N] and the style feature [N, feature_dim]."""
        return self.encoders[scene](x, d)

    def decode(self, style: str, inputs: Tensor) -> Tensor:  # [N, decoder_inputs] -> [N, 3]
        return self.decoders[style](inputs)

    def query(self, scene: str, style: str, x: Tensor, d: Tensor) -> QueryResult:
        """Density, colour and style feature of points `x` [N, 3] seen along `d` [N, 3].

        Without `desired_shape_features`, a desired style's decoder reads the feature as a
        constant: its colour loss trains the decoder (and the density), not the encoder.
        """
        sigma, feature = self.features(scene, x, d)
        read = feature if self.desired_shape_features or style == ORIGINAL else feature.detach()
        return QueryResult(sigma, self.decode(style, self.decoder_input(scene, x, sigma, read)), feature)
