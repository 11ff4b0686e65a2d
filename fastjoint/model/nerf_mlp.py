"""The research code's scene encoder (vanilla NeRF's MLP), kept as a baseline."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastjoint.config import MlpConfig


def positional_encoding(x: Tensor, n_frequencies: int) -> Tensor:  # [N, D] -> [N, D * (1 + 2 n)]
    """x and sin, cos of x * 2^k for k < n_frequencies (NeRF's embedding, input included)."""
    scales = 2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)
    angles = (x[:, None, :] * scales[:, None]).flatten(1)  # (an empty batch too)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class NerfEncoder(nn.Module):
    """World position and view direction -> density (ReLU) and a style feature (tanh).

    depth x width ReLU layers on the encoded position, the encoding fed again after layer
    `skip`; density from the last layer; a width feature layer joined with the encoded view
    direction, then width/2, then the feature.
    """

    def __init__(self, config: MlpConfig, feature_dim: int, box_side: float = 1.0) -> None:
        super().__init__()
        self.box_side = box_side  # the scene box's longest side (the normals' step is a share of it)
        self.position_frequencies = config.position_frequencies
        self.direction_frequencies = config.direction_frequencies
        n_position = 3 * (1 + 2 * config.position_frequencies)
        n_direction = 3 * (1 + 2 * config.direction_frequencies)
        self.skip = config.skip
        layers = [nn.Linear(n_position, config.width)]
        for i in range(config.depth - 1):
            layers.append(nn.Linear(config.width + (n_position if i == config.skip else 0), config.width))
        self.layers = nn.ModuleList(layers)
        self.density_out = nn.Linear(config.width, 1)
        self.feature_layer = nn.Linear(config.width, config.width)
        self.view_layer = nn.Linear(config.width + n_direction, config.width // 2)
        self.feature_out = nn.Linear(config.width // 2, feature_dim)

    def _trunk(self, x: Tensor) -> Tensor:
        encoded = positional_encoding(x, self.position_frequencies)
        h = encoded
        for i, layer in enumerate(self.layers):
            h = torch.relu(layer(h))
            if i == self.skip:
                h = torch.cat([encoded, h], dim=-1)
        return h

    def density(self, x: Tensor) -> Tensor:  # [N, 3] world -> [N]
        return torch.relu(self.density_out(self._trunk(x))[:, 0])

    def log_density(self, x: Tensor) -> Tensor:  # [N, 3] world -> [N]
        """The log of the density (floored at 1e-6, where the ReLU gives 0): what the normals differentiate."""
        return self.density(x).clamp_min(1e-6).log()

    def _feature_logits(self, h: Tensor, d: Tensor) -> Tensor:  # trunk [N, width], [N, 3] -> [N, feature_dim]
        view = torch.cat([self.feature_layer(h), positional_encoding(d, self.direction_frequencies)], dim=-1)
        return self.feature_out(torch.relu(self.view_layer(view)))

    def feature_logits(self, x: Tensor, d: Tensor) -> Tensor:  # [N, 3], [N, 3] -> [N, feature_dim]
        """The style feature before its tanh (the feature is its tanh)."""
        return self._feature_logits(self._trunk(x), d)

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:  # -> sigma [N], feature [N, feature_dim]
        h = self._trunk(x)
        sigma = torch.relu(self.density_out(h)[:, 0])
        return sigma, self._feature_logits(h, d).tanh()
