"""The style decoder: a tiny MLP from the style feature to colour."""

from __future__ import annotations

from torch import Tensor, nn


class StyleDecoder(nn.Module):
    """feature [N, feature_dim] -> hidden (ReLU) x layers -> RGB [N, 3] (sigmoid). Tiny on purpose."""

    def __init__(self, feature_dim: int, hidden: int, layers: int = 1) -> None:
        super().__init__()
        widths = [feature_dim] + [hidden] * layers
        modules: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            modules += [nn.Linear(a, b), nn.ReLU()]
        modules.append(nn.Linear(widths[-1], 3))
        self.net = nn.Sequential(*modules)

    def forward(self, feature: Tensor) -> Tensor:
        return self.net(feature).sigmoid()
