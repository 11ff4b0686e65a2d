"""The hash-grid encoder of one scene."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastjoint.ops import grid_layout, hashgrid_encode
from fastjoint.ops.tcnn import TcnnHashGrid, encoding_config


class HashGrid(nn.Module):
    """tiny-cuda-nn's HashGrid encoding as a module: [N, 3] in [0,1]^3 -> [N, L*F].

    `backend` is a resolved grid backend (fastjoint.ops.resolve_backends): "torch",
    "native" or "tcnn". The parameter is `table` [n_params, F] whichever runs, so a
    checkpoint loads under any backend.
    """

    def __init__(
        self,
        n_levels: int,
        features_per_level: int,
        log2_table_size: int,
        base_resolution: int,
        per_level_scale: float,
        backend: str = "torch",
    ) -> None:
        super().__init__()
        self.layout = grid_layout(n_levels, log2_table_size, base_resolution, per_level_scale)
        self.features_per_level = features_per_level
        assert backend in ("torch", "native", "tcnn"), f"unresolved or unknown grid backend {backend!r}"
        self.backend = backend
        self.tcnn_config = encoding_config(n_levels, features_per_level, log2_table_size, base_resolution, per_level_scale)
        self._tcnn: TcnnHashGrid | None = None  # built on the first call, on the table's device
        # tiny-cuda-nn's initialisation: uniform in [-1e-4, 1e-4].
        self.table = nn.Parameter(torch.empty(self.layout.n_params, features_per_level).uniform_(-1e-4, 1e-4))

    @property
    def n_output_dims(self) -> int:
        return self.layout.n_levels * self.features_per_level

    def forward(self, x: Tensor) -> Tensor:
        if self.backend == "tcnn":
            if self._tcnn is None:
                self._tcnn = TcnnHashGrid(self.tcnn_config, self.table.device)
            return self._tcnn(x, self.table)
        return hashgrid_encode(x, self.table, self.layout, self.backend)
