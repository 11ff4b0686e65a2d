"""The style decoder: a tiny MLP from the style feature to colour."""

from __future__ import annotations

from torch import Tensor, nn


class StyleDecoder(nn.Module):
    """feature [N, feature_dim] -> hidden (ReLU) -> RGB [N, 3] (sigmoid). Tiny on purpose."""

    def __init__(self, feature_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, feature: Tensor) -> Tensor:
        return self.net(feature).sigmoid()
