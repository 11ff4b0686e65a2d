"""JointModel: an encoder per scene and a decoder per style, meeting in a 2-D feature space."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from fastjoint.config import MlpConfig, ModelConfig
from fastjoint.model.decoder import StyleDecoder
from fastjoint.model.hashgrid import HashGrid
from fastjoint.model.head import FeatureHead
from fastjoint.model.nerf_mlp import NerfEncoder
from fastjoint.pairing import SCENES, STYLES


class QueryResult(NamedTuple):
    sigma: Tensor  # [N] density
    rgb: Tensor  # [N, 3]
    feature: Tensor  # [N, feature_dim] style feature in [-1, 1]


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
    """Two scene encoders and two style decoders; `query(scene, style, x, d)` pairs them.

    With `config.encoder == "hashgrid"`, each scene has a hash grid and the feature head is
    shared unless `config.share_head` is false; with "mlp", each scene has the research code's
    MLP (`mlp`). Positions are world coordinates.
    """

    def __init__(
        self,
        config: ModelConfig,
        aabb: Sequence[float],
        grid_backend: str = "torch",
        mlp: MlpConfig | None = None,
    ) -> None:
        super().__init__()
        self.encoder_kind = config.encoder
        box = torch.tensor(aabb, dtype=torch.float32)
        if config.encoder == "mlp":
            mlp = mlp or MlpConfig()
            self.encoders = nn.ModuleDict({scene: NerfEncoder(mlp, config.feature_dim) for scene in SCENES})
            decoder_layers = mlp.decoder_layers
        else:
            grids = {
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
            n_grid = grids[SCENES[0]].n_output_dims
            shared = FeatureHead(n_grid, config) if config.share_head else None
            self.encoders = nn.ModuleDict(
                {scene: HashGridEncoder(grids[scene], shared or FeatureHead(n_grid, config), box) for scene in SCENES}
            )
            decoder_layers = 1
        self.decoders = nn.ModuleDict(
            {style: StyleDecoder(config.feature_dim, config.decoder_hidden, decoder_layers) for style in STYLES}
        )

    def density(self, scene: str, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return self.encoders[scene].density(x)

    def query(self, scene: str, style: str, x: Tensor, d: Tensor) -> QueryResult:
        """Density, colour and style feature of points `x` [N, 3] seen along `d` [N, 3]."""
        sigma, feature = self.encoders[scene](x, d)
        return QueryResult(sigma, self.decoders[style](feature), feature)

    def grid_parameters(self) -> list[nn.Parameter]:
        """The hash tables (empty for the mlp encoder)."""
        return [m.table for m in self.modules() if isinstance(m, HashGrid)]

    def network_parameters(self) -> list[nn.Parameter]:
        grid_ids = {id(p) for p in self.grid_parameters()}
        return [p for p in self.parameters() if id(p) not in grid_ids]
