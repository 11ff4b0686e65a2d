"""The small networks of the card (feature head, style decoders) as one module type."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastjoint.ops.tcnn import TcnnMlp


class Mlp(nn.Sequential):
    """Linear, ReLU, ..., Linear, run by PyTorch or by tiny-cuda-nn's fully fused MLP.

    `backend` is a resolved MLP backend (fastjoint.ops.resolve_backends): "torch" or "tcnn".
    The parameters are the Linear layers whichever runs, so a checkpoint loads under either.
    A slice (`net[:-1]`) is an Mlp run by PyTorch.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.backend = "torch"
        self._tcnn: TcnnMlp | None = None  # built on the first call, on the weights' device

    @classmethod
    def of_widths(cls, widths: Sequence[int], backend: str = "torch") -> Mlp:
        """widths[0] inputs -> widths[1:-1] hidden units (ReLU) -> widths[-1] outputs."""
        assert len(widths) >= 3, f"an Mlp needs a hidden layer, got widths {list(widths)}"
        assert backend in ("torch", "tcnn"), f"unresolved or unknown mlp backend {backend!r}"
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:-1]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        mlp = cls(*layers, nn.Linear(widths[-2], widths[-1]))
        mlp.backend = backend
        return mlp

    def forward(self, x: Tensor) -> Tensor:
        if self.backend == "tcnn":
            linears = [m for m in self if isinstance(m, nn.Linear)]
            if self._tcnn is None:
                first = linears[0].weight
                fused = TcnnMlp(first.shape[1], linears[-1].weight.shape[0], first.shape[0], len(linears) - 1, first.device)
                self._check_tcnn(fused, linears)
                self._tcnn = fused
            return self._tcnn(x, linears)
        return super().forward(x)

    @torch.no_grad()
    def _check_tcnn(self, fused: TcnnMlp, linears: list[nn.Linear]) -> None:
        """Once, before its first call: tiny-cuda-nn's network must compute ours (within fp16), or nothing runs on it."""
        first = linears[0].weight
        generator = torch.Generator(first.device).manual_seed(0)  # its own: the run's random stream is left as it was
        x = torch.rand(256, first.shape[1], generator=generator, device=first.device) * 2 - 1
        ours, theirs = super().forward(x), fused(x, linears)
        difference = (theirs - ours).abs().max().item()
        if not difference <= 1e-2 * max(1.0, ours.abs().max().item()):
            raise RuntimeError(
                f"backend.mlp = tcnn: tiny-cuda-nn's network differs from PyTorch's on the same weights by up to "
                f"{difference:.3g}; run with backend.mlp = torch"
            )
