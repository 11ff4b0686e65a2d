"""Occupancy grids: one nerfacc.OccGridEstimator per scene, on every device."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from nerfacc import OccGridEstimator
from torch import Tensor, nn

from fastjoint.config import RenderConfig

# Points per density evaluation while updating a grid; bounds memory on the CPU.
UPDATE_CHUNK = 65536


def make_estimators(levels: Mapping[str, int], aabb: Sequence[float], config: RenderConfig) -> nn.ModuleDict:
    """One occupancy grid per scene (`levels`: scene -> its levels): level 0 covers the scene box, each
    further level a box twice as large."""
    return nn.ModuleDict(
        {scene: OccGridEstimator(roi_aabb=list(aabb), resolution=config.occ_resolution, levels=n) for scene, n in levels.items()}
    )


def update_occupancy(
    estimator: OccGridEstimator,
    density_fn: Callable[[Tensor], Tensor],  # [N, 3] world points -> [N] density
    step: int,
    config: RenderConfig,
) -> None:
    """nerfacc's EMA update every `occ_update_every` steps, with opacity = density * step."""

    def occupancy(x: Tensor) -> Tensor:
        return torch.cat([density_fn(chunk) for chunk in x.split(UPDATE_CHUNK)]) * config.step_size

    # nerfacc writes cells with repeated indices; on the CPU only the deterministic mode of
    # that write makes a seeded run repeat exactly (and a resumed run match an uninterrupted one).
    deterministic = estimator.occs.device.type == "cpu" and not torch.are_deterministic_algorithms_enabled()
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        estimator.update_every_n_steps(
            step=step,
            occ_eval_fn=occupancy,
            occ_thre=config.occ_threshold,
            ema_decay=config.occ_ema_decay,
            warmup_steps=config.occ_warmup_steps,
            n=config.occ_update_every,
        )
    finally:
        if deterministic:
            torch.use_deterministic_algorithms(False)
