"""The style decoder: a tiny MLP from the style feature to colour."""

from __future__ import annotations

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
        return self.net(feature).sigmoid()
