"""JointModel: a hash grid per scene, a feature head, a decoder per style."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from fastjoint.config import ModelConfig
from fastjoint.model.decoder import StyleDecoder
from fastjoint.model.hashgrid import HashGrid
from fastjoint.model.head import FeatureHead
from fastjoint.pairing import SCENES, STYLES


class QueryResult(NamedTuple):
    sigma: Tensor  # [N] density
    rgb: Tensor  # [N, 3]
    feature: Tensor  # [N, feature_dim] style feature in [-1, 1]


class JointModel(nn.Module):
    """Two scene encoders (grid + head) and two style decoders meeting in a 2-D feature space.

    Positions are world coordinates; each is normalised into [0, 1]^3 by the scene box.
    """

    def __init__(self, config: ModelConfig, aabb: Sequence[float], grid_backend: str = "torch") -> None:
        super().__init__()
        self.register_buffer("aabb", torch.tensor(aabb, dtype=torch.float32))
        self.grids = nn.ModuleDict(
            {
                scene: HashGrid(
                    config.grid_levels,
                    config.grid_features_per_level,
                    config.grid_log2_table_size,
                    config.grid_base_resolution,
                    config.per_level_scale,
                    backend=grid_backend,
                )
                for scene in SCENES
            }
        )
        n_grid = self.grids[SCENES[0]].n_output_dims
        if config.share_head:
            shared = FeatureHead(n_grid, config)
            self.heads = nn.ModuleDict({scene: shared for scene in SCENES})
        else:
            self.heads = nn.ModuleDict({scene: FeatureHead(n_grid, config) for scene in SCENES})
        self.decoders = nn.ModuleDict({style: StyleDecoder(config.feature_dim, config.decoder_hidden) for style in STYLES})

    def normalise(self, x: Tensor) -> Tensor:  # [N, 3] world -> [N, 3] in [0, 1]
        return ((x - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])).clamp(0.0, 1.0)

    def density(self, scene: str, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        sigma, _ = self.heads[scene].density(self.grids[scene](self.normalise(x)))
        return sigma

    def query(self, scene: str, style: str, x: Tensor, d: Tensor) -> QueryResult:
        """Density, colour and style feature of points `x` [N, 3] seen along `d` [N, 3]."""
        head = self.heads[scene]
        sigma, geometry = head.density(self.grids[scene](self.normalise(x)))
        feature = head.feature(geometry, d)
        return QueryResult(sigma, self.decoders[style](feature), feature)

    def grid_parameters(self) -> list[nn.Parameter]:
        return [grid.table for grid in self.grids.values()]

    def network_parameters(self) -> list[nn.Parameter]:
        grid_ids = {id(p) for p in self.grid_parameters()}
        return [p for p in self.parameters() if id(p) not in grid_ids]
