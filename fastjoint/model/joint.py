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

    def _grid_features(self, x: Tensor) -> Tensor:
        if self.contracted:
            unit = (contract((x - self.box_centre) / self.box_half) * 0.25 + 0.5).clamp(0.0, 1.0)
        else:
            unit = ((x - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])).clamp(0.0, 1.0)
        return self.grid(unit)

    def density(self, x: Tensor) -> Tensor:  # [N, 3] world -> [N]
        sigma, _ = self.head.density(self._grid_features(x))
        return sigma

    def baked_values(self, x: Tensor, view_dependent: bool) -> Tensor:  # [N, 3] world -> [N, C]
        """What a baked scene stores at a point (fastjoint.render.baked): the density before its exp
        activation, then the geometry features that the feature network reads with the view direction
        (`view_dependent`) or the style feature averaged over BAKE_DIRECTIONS."""
        logit, geometry = self.head.density_logit(self._grid_features(x))
        if not view_dependent:
            geometry = self.head.mean_feature(geometry, BAKE_DIRECTIONS.to(x.device))
        return torch.cat([logit[:, None], geometry], dim=1)

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
    `decode(style, feature)`, so that a style swap re-runs only the decoder.

    Args:
        encoders: scene -> its encoder (`density(x)`, and `(x, d) -> (sigma, feature)`).
        styles: the styles to make decoders for, `original` first.
        feature_dim: the style feature's dimension.
        decoder_hidden: hidden width of each decoder.
        decoder_layers: hidden layers of each decoder.
        desired_shape_features: whether a desired style's colour loss reaches the encoders
            (the method); False: its decoder reads the feature as a constant.
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
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.feature_dim = feature_dim
        self.decoder_hidden = decoder_hidden
        self.decoder_layers = decoder_layers
        self.desired_shape_features = desired_shape_features
        self.mlp_backend = mlp_backend
        self.decoders = nn.ModuleDict({style: self.new_decoder() for style in styles})

    def new_decoder(self) -> StyleDecoder:
        """A freshly initialised decoder of this model's shape."""
        return StyleDecoder(self.feature_dim, self.decoder_hidden, self.decoder_layers, self.mlp_backend)

    def decoder_from_original(self) -> StyleDecoder:
        """A new decoder that starts as a copy of the `original` decoder, on its device."""
        original = self.decoders[ORIGINAL]
        decoder = self.new_decoder().to(next(original.parameters()).device)
        decoder.load_state_dict(original.state_dict())
        return decoder

    def density(self, scene: str, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return self.encoders[scene].density(x)

    def features(self, scene: str, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """The style-free part of a query: density [N] and the style feature [N, feature_dim]."""
        return self.encoders[scene](x, d)

    def decode(self, style: str, feature: Tensor) -> Tensor:  # [N, feature_dim] -> [N, 3]
        return self.decoders[style](feature)

    def query(self, scene: str, style: str, x: Tensor, d: Tensor) -> QueryResult:
        """Density, colour and style feature of points `x` [N, 3] seen along `d` [N, 3].

        Without `desired_shape_features`, a desired style's decoder reads the feature as a
        constant: its colour loss trains the decoder (and the density), not the encoder.
        """
        sigma, feature = self.features(scene, x, d)
        read = feature if self.desired_shape_features or style == ORIGINAL else feature.detach()
        return QueryResult(sigma, self.decode(style, read), feature)
