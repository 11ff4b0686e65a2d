"""The style decoders: a tiny MLP from the style feature to colour, and one with a pattern field."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fastjoint.model.mlp import Mlp

PATTERN_CHANNELS = 2
"""Channels of a pattern field: each material mixes them into its colour in its own proportions."""
PATTERN_FILTERS = 3
"""Sinusoid filters of a pattern field: its units are products of up to this many waves of position."""


class StyleDecoder(nn.Module):
    """feature [N, feature_dim] -> hidden (ReLU) x layers -> RGB [N, 3] (sigmoid). Tiny on purpose.

    `uses`: only the first `uses` input columns are read (the style feature without the
    position code that position-aware siblings see); None: all `feature_dim` of them.
    `mlp_backend` runs the network (Mlp).
    """

    def __init__(self, feature_dim: int, hidden: int, layers: int = 1, uses: int | None = None, mlp_backend: str = "torch") -> None:
        super().__init__()
        self.uses = uses
        self.net = Mlp.of_widths([feature_dim if uses is None else uses] + [hidden] * layers + [3], mlp_backend)

    def forward(self, feature: Tensor) -> Tensor:
        if self.uses is not None:
            feature = feature[:, : self.uses]
        return self.net(feature).sigmoid()


class PatternField(nn.Module):
    """A function of position p in [-1, 1]^3 built from products of sinusoids.

    A multiplicative filter network (Fathony et al., "Multiplicative Filter Networks", ICLR
    2021): z_1 = sin(W_1 p + b_1), z_{k+1} = (U_k z_k + c_k) * sin(W_{k+1} p + b_{k+1}), out = V z_K.
    Its units are sums of products of K waves of p, so a pattern made of waves (a check is the
    sign of a product of three, stripes of one) is within reach of a few units, and what it
    learns where it saw the pattern repeats elsewhere instead of fading to a constant.

    `cycles` sets the spread of the waves' frequencies at initialisation: each filter's weights
    are uniform in +-pi cycles / sqrt(K) (radians per unit of p), so that a product's
    frequencies, sums of K such weights, spread as far as one uniform in +-pi cycles would: up
    to `cycles` half-periods per unit of p. Training moves them.
    """

    def __init__(self, width: int, channels: int, cycles: float, filters: int = PATTERN_FILTERS) -> None:
        super().__init__()
        frequency = math.pi * cycles / math.sqrt(filters)
        self.filters = nn.ModuleList(nn.Linear(3, width) for _ in range(filters))
        for layer in self.filters:
            nn.init.uniform_(layer.weight, -frequency, frequency)
            nn.init.uniform_(layer.bias, -math.pi, math.pi)
        self.mixes = nn.ModuleList(nn.Linear(width, width) for _ in range(filters - 1))
        bound = math.sqrt(6.0 / width)  # keeps the products' variance from shrinking with depth
        for layer in self.mixes:
            nn.init.uniform_(layer.weight, -bound, bound)
        self.out = nn.Linear(width, channels)
        nn.init.uniform_(self.out.weight, -bound, bound)  # channels of about unit spread, so the gate learns fast

    def forward(self, p: Tensor) -> Tensor:  # [N, 3] -> [N, channels]
        z = torch.sin(self.filters[0](p))
        for mix, layer in zip(self.mixes, self.filters[1:]):
            z = mix(z) * torch.sin(layer(p))
        return self.out(z)


class PatternDecoder(StyleDecoder):
    """A desired style's decoder that can draw a pattern: colour = sigmoid(base(phi) + gate(phi) . field(p)).

    Its input is the style feature phi [N, feature_dim] followed by the point's place p in
    the box, [-1, 1]^3. `net` is the StyleDecoder's network of the feature alone, the colour a
    material takes; `field` (a PatternField) is one function of position shared by every
    material; `gate`, read from the net's last hidden layer, says how far each of the field's
    channels moves each colour channel of a material. Position cannot tell materials apart
    here: only the feature chooses a colour and whether the pattern shows. The gate starts at
    zero, so a new decoder computes its net's colours (`JointModel.decoder_from_original`).
    """

    def __init__(self, feature_dim: int, hidden: int, layers: int, width: int, cycles: float) -> None:
        super().__init__(feature_dim + 3, hidden, layers, uses=feature_dim)
        self.gate = nn.Linear(hidden, 3 * PATTERN_CHANNELS)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.field = PatternField(width, PATTERN_CHANNELS, cycles)

    def forward(self, inputs: Tensor) -> Tensor:  # [N, feature_dim + 3] -> [N, 3]
        feature, p = inputs[:, : self.uses], inputs[:, self.uses : self.uses + 3]
        hidden = self.net[:-1](feature)
        gate = self.gate(hidden).unflatten(-1, (3, PATTERN_CHANNELS))
        return (self.net[-1](hidden) + (gate * self.field(p)[:, None, :]).sum(-1)).sigmoid()
