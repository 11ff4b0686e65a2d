"""The feature head: grid features -> density and the 2-D style feature."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastjoint.config import ModelConfig
from fastjoint.model.encoding import spherical_harmonics, trunc_exp
from fastjoint.model.mlp import Mlp


class FeatureHead(nn.Module):
    """Density (exp activation) and a style feature in [-1, 1]^feature_dim (tanh).

    The density network sees only the grid features; the feature network sees the
    geometry features it passes on and the view direction in spherical harmonics.
    `mlp_backend` runs both networks (Mlp).
    """

    def __init__(self, n_grid_features: int, config: ModelConfig, mlp_backend: str = "torch") -> None:
        super().__init__()
        self.sh_degree = config.sh_degree
        self.density_net = Mlp.of_widths([n_grid_features, config.hidden, 1 + config.geometry_features], mlp_backend)
        self.feature_net = Mlp.of_widths([config.geometry_features + config.sh_degree**2, config.hidden, config.feature_dim], mlp_backend)

    def density(self, grid_features: Tensor) -> tuple[Tensor, Tensor]:  # [N, G] -> [N], [N, geo]
        out = self.density_net(grid_features)
        return trunc_exp(out[:, 0]), out[:, 1:]

    def density_logit(self, grid_features: Tensor) -> tuple[Tensor, Tensor]:  # [N, G] -> [N], [N, geo]
        """The density before its exp activation (sigma = exp of it), and the geometry features."""
        out = self.density_net(grid_features)
        return out[:, 0], out[:, 1:]

    # The feature network's first layer is linear, so it splits in two: a part of the geometry features
    # (with the bias) and a part of the view direction; a point seen along a direction gets their sum.
    def _from_geometry(self, geometry: Tensor) -> Tensor:  # [N, geo] -> [N, hidden]
        first = self.feature_net[0]
        return torch.addmm(first.bias, geometry, first.weight[:, : geometry.shape[1]].T)

    def _from_direction(self, dirs: Tensor) -> Tensor:  # [M, 3] -> [M, hidden]
        first = self.feature_net[0]
        sh = spherical_harmonics(dirs, self.sh_degree)
        return sh @ first.weight[:, first.weight.shape[1] - sh.shape[1] :].T

    def mean_feature(self, geometry: Tensor, dirs: Tensor) -> Tensor:  # [N, geo], [M, 3] -> [N, feature_dim]
        """The style feature of each point averaged over the view directions `dirs` (the same as
        averaging `feature` over them; the first layer's geometry part is computed once per point)."""
        from_geometry, from_direction = self._from_geometry(geometry), self._from_direction(dirs)
        hidden = from_geometry.shape[1]
        features = self.feature_net[1:]((from_geometry[:, None, :] + from_direction[None, :, :]).reshape(-1, hidden)).tanh()
        return features.reshape(geometry.shape[0], dirs.shape[0], -1).mean(dim=1)

    def feature_along_rays(self, geometry: Tensor, ray_dirs: Tensor, rays: Tensor, chunk: int = 1 << 18) -> Tensor:
        """`feature(geometry, ray_dirs[rays])` ([N, geo], [R, 3], [N] -> [N, feature_dim]) with the
        direction's part of the first layer computed once per ray rather than once per sample, and
        `chunk` samples at a time (their hidden layer is the memory)."""
        from_direction = self._from_direction(ray_dirs)  # [R, hidden]
        parts = [  # an empty `geometry` splits into one empty chunk
            self.feature_net[1:](self._from_geometry(g) + from_direction.index_select(0, r)).tanh()
            for g, r in zip(geometry.split(chunk), rays.split(chunk), strict=True)
        ]
        return torch.cat(parts)

    def feature_logit(self, geometry: Tensor, dirs: Tensor) -> Tensor:  # [N, geo], [N, 3] -> [N, feature_dim]
        """The style feature before its tanh."""
        sh = spherical_harmonics(dirs, self.sh_degree)
        return self.feature_net(torch.cat([geometry, sh], dim=-1))

    def feature(self, geometry: Tensor, dirs: Tensor) -> Tensor:  # [N, geo], [N, 3] -> [N, feature_dim]
        return self.feature_logit(geometry, dirs).tanh()
