"""The style decoder: a tiny MLP from the style feature to colour."""

from __future__ import annotations

from torch import Tensor, nn

from fastjoint.model.mlp import Mlp


class StyleDecoder(nn.Module):
    """inputs [N, inputs] -> hidden (ReLU) x layers -> RGB [N, 3] (sigmoid). Tiny on purpose.

    The inputs are the style feature, then, where the model's decoders read it, the surface
    normal (JointModel.decoder_input). `mlp_backend` runs the network (Mlp).
    """

    def __init__(self, inputs: int, hidden: int, layers: int = 1, mlp_backend: str = "torch") -> None:
        super().__init__()
        self.net = Mlp.of_widths([inputs] + [hidden] * layers + [3], mlp_backend)

    @property
    def inputs(self) -> int:
        """How many numbers the decoder reads."""
        return self.net[0].in_features

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs).sigmoid()
