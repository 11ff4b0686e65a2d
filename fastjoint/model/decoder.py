"""The style decoder: a tiny MLP from the style feature to colour."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastjoint.model.mlp import Mlp


class StyleDecoder(nn.Module):
    """feature [N, feature_dim] -> hidden (ReLU) x layers -> RGB [N, 3] (sigmoid). Tiny on purpose.

    `mlp_backend` runs the network (Mlp).
    """

    def __init__(self, feature_dim: int, hidden: int, layers: int = 1, mlp_backend: str = "torch") -> None:
        super().__init__()
        self.net = Mlp.of_widths([feature_dim] + [hidden] * layers + [3], mlp_backend)

    def forward(self, feature: Tensor) -> Tensor:
        wanted = self.net[0].in_features
        if feature.shape[1] < wanted:  # scratch (issue 21, model.decoder_normal): no normal known
            feature = torch.cat([feature, feature.new_zeros(feature.shape[0], wanted - feature.shape[1])], dim=1)
        return self.net(feature).sigmoid()
