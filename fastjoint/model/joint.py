"""JointModel: an encoder per scene and a decoder per style, meeting in a 2-D feature space."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fastjoint.model.decoder import PatternDecoder, StyleDecoder
from fastjoint.model.hashgrid import HashGrid
from fastjoint.model.head import FeatureHead
from fastjoint.pairing import ORIGINAL


class QueryResult(NamedTuple):
    sigma: Tensor  # [N] density
    rgb: Tensor  # [N, 3]
    feature: Tensor  # [N, decoder_inputs] what the decoders see: the style feature (+ position code)


class HashGridEncoder(nn.Module):
    """A scene's hash grid (positions normalised by the scene box) and a feature head."""

    def __init__(self, grid: HashGrid, head: FeatureHead, aabb: Tensor) -> None:
        super().__init__()
        self.grid = grid
        self.head = head
        self.register_buffer("aabb", aabb.clone())

    def _grid_features(self, x: Tensor) -> Tensor:
        unit = ((x - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])).clamp(0.0, 1.0)
        return self.grid(unit)

    def density(self, x: Tensor) -> Tensor:  # [N, 3] world -> [N]
        sigma, _ = self.head.density(self._grid_features(x))
        return sigma

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

    With `position_octaves` > 0 the decoders are position-aware: what they see is the style
    feature followed by a sin/cos code of the point's place in `box` (`position_code`), and
    `features` returns both, so that everything that caches features (restyle, the viewer)
    caches the code too. `style_feature` takes the feature part back out.

    With `pattern_width` > 0 (instead of the octaves), every desired style's decoder is a
    PatternDecoder with a pattern field of that width: what the decoders see is the style
    feature followed by the point's place in `box`, scaled to [-1, 1]^3; the `original`
    decoder reads the feature alone.

    `mlp_backend` runs the StyleDecoders' networks, those of decoders added later too
    (`new_decoder`); a PatternDecoder's stay PyTorch's.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        styles: Sequence[str],
        feature_dim: int,
        decoder_hidden: int,
        decoder_layers: int = 1,
        position_octaves: int = 0,
        box: Sequence[float] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
        position_original: bool = True,
        desired_shape_features: bool = True,
        pattern_width: int = 0,
        pattern_cycles: float = 4.0,
        mlp_backend: str = "torch",
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.feature_dim = feature_dim
        self.decoder_hidden = decoder_hidden
        self.decoder_layers = decoder_layers
        self.position_octaves = position_octaves
        self.position_original = position_original
        self.desired_shape_features = desired_shape_features
        if position_octaves and pattern_width:
            raise ValueError("position octaves and a pattern field are two different decoders: choose one")
        self.pattern_width = pattern_width
        self.pattern_cycles = pattern_cycles
        self.mlp_backend = mlp_backend
        self.decoder_inputs = feature_dim + 6 * position_octaves + (3 if pattern_width else 0)
        self.register_buffer("position_box", torch.tensor(box, dtype=torch.float32), persistent=False)
        self.decoders = nn.ModuleDict({style: self.new_decoder(style) for style in styles})

    def new_decoder(self, style: str | None = None) -> StyleDecoder:
        """A freshly initialised decoder of this model's shape for `style` (None: a desired style).

        With position-aware decoders but `position_original` off, or with pattern fields, the
        `original` decoder, the one both scenes share, reads the style feature alone, as in the method.
        """
        if self.pattern_width and style != ORIGINAL:
            return PatternDecoder(self.feature_dim, self.decoder_hidden, self.decoder_layers, self.pattern_width, self.pattern_cycles)
        feature_only = (self.pattern_width or (self.position_octaves and not self.position_original)) and style == ORIGINAL
        uses = self.feature_dim if feature_only else None
        return StyleDecoder(self.decoder_inputs, self.decoder_hidden, self.decoder_layers, uses, self.mlp_backend)

    def decoder_from_original(self, style: str | None = None) -> StyleDecoder:
        """A new decoder for `style` that starts as a copy of the `original` decoder.

        Where the new one sees the position code and the original does not, the code's
        input weights start at zero, so that it still computes the original's colours; a
        PatternDecoder's gate starts at zero for the same reason.
        """
        decoder = self.new_decoder(style).to(self.position_box.device)
        state = self.decoders[ORIGINAL].net.state_dict()
        first = decoder.net[0].weight
        if state["0.weight"].shape != first.shape:
            padded = torch.zeros_like(first)
            padded[:, : state["0.weight"].shape[1]] = state["0.weight"]
            state = {**state, "0.weight": padded}
        decoder.net.load_state_dict(state)
        return decoder

    def position_code(self, x: Tensor) -> Tensor:  # [N, 3] world -> [N, decoder_inputs - feature_dim]
        """What the decoders see of a point's place p in the box, scaled to [-1, 1]^3: p itself
        (pattern fields), or sin and cos of 2^k pi p for k < octaves."""
        low, high = self.position_box[:3], self.position_box[3:]
        p = (2.0 * (x - low) / (high - low) - 1.0).clamp(-1.0, 1.0)
        if self.pattern_width:
            return p
        scales = math.pi * 2.0 ** torch.arange(self.position_octaves, device=x.device, dtype=x.dtype)
        angles = (p[:, None, :] * scales[:, None]).flatten(1)  # [N, octaves * 3]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def style_feature(self, decoder_input: Tensor) -> Tensor:  # [N, decoder_inputs] -> [N, feature_dim]
        """The style feature of what `features` returns (without the position code)."""
        return decoder_input[:, : self.feature_dim]

    def plane_inputs(self, feature: Tensor) -> Tensor:  # [N, feature_dim] -> [N, decoder_inputs]
        """Decoder inputs for bare style features: with position-aware decoders, at the box's centre."""
        if self.decoder_inputs == self.feature_dim:
            return feature
        centre = ((self.position_box[:3] + self.position_box[3:]) / 2).to(feature.device)
        code = self.position_code(centre[None].expand(feature.shape[0], 3).to(feature.dtype))
        return torch.cat([feature, code], dim=-1)

    def density(self, scene: str, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return self.encoders[scene].density(x)

    def features(self, scene: str, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """The style-free part of a query: density [N] and the decoders' input [N, decoder_inputs]."""
        sigma, feature = self.encoders[scene](x, d)
        if self.decoder_inputs > self.feature_dim:
            feature = torch.cat([feature, self.position_code(x)], dim=-1)
        return sigma, feature

    def decode(self, style: str, feature: Tensor) -> Tensor:  # [N, decoder_inputs] -> [N, 3]
        return self.decoders[style](feature)

    def query(self, scene: str, style: str, x: Tensor, d: Tensor) -> QueryResult:
        """Density, colour and style feature of points `x` [N, 3] seen along `d` [N, 3].

        Without `desired_shape_features`, a desired style's decoder reads the feature as a
        constant: its colour loss trains the decoder (and the density), not the encoder.
        """
        sigma, feature = self.features(scene, x, d)
        read = feature if self.desired_shape_features or style == ORIGINAL else feature.detach()
        return QueryResult(sigma, self.decode(style, read), feature)
