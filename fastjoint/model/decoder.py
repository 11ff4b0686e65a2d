"""The style decoder: a tiny MLP from the style feature to colour."""

from __future__ import annotations

from torch import Tensor, nn


class StyleDecoder(nn.Module):
    """feature [N, feature_dim] -> hidden (ReLU) x layers -> RGB [N, 3] (sigmoid). Tiny on purpose.

    `uses`: only the first `uses` input columns are read (the style feature without the
    position code that position-aware siblings see); None: all `feature_dim` of them.
    """

    def __init__(self, feature_dim: int, hidden: int, layers: int = 1, uses: int | None = None) -> None:
        super().__init__()
        self.uses = uses
        widths = [feature_dim if uses is None else uses] + [hidden] * layers
        modules: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            modules += [nn.Linear(a, b), nn.ReLU()]
        modules.append(nn.Linear(widths[-1], 3))
        self.net = nn.Sequential(*modules)

    def forward(self, feature: Tensor) -> Tensor:
        if self.uses is not None:
            feature = feature[:, : self.uses]
        return self.net(feature).sigmoid()
