"""Held-out views aligned to their photos before they are scored (`fastjoint eval --align-poses`).

A capture's test poses come from the same estimate as its training poses (COLMAP), so each is
off by a fraction of a degree: a pixel or more, which costs a held-out view decibels however
good the scene is. As methods that refine poses are scored (BARF, NeRF--), each held-out
view's pose is first corrected against its own photo with the scene held fixed: a rotation
about the camera's centre and a shift (fastjoint.model.poses), trained with Adam for
ALIGN_STEPS steps of ALIGN_RAYS random pixels, the learning rate falling tenfold on the way.
The trained model does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from fastjoint.data import Split
from fastjoint.data.cameras import pixel_rays
from fastjoint.model.poses import PoseCorrection
from fastjoint.pairing import Pairing
from fastjoint.run import Built, LoadedRun

ALIGN_STEPS = 150
ALIGN_RAYS = 2048
ALIGN_LR = 2e-3  # radians and world units per step, at first (Adam)


class Aligned(NamedTuple):
    poses: Tensor  # [n, 4, 4] the views' poses, corrected
    rotation_deg: Tensor  # [n] each correction's angle
    shift: Tensor  # [n] each correction's shift, world units

    def to_json(self) -> dict:
        return {"rotation_deg": [round(v, 4) for v in self.rotation_deg.tolist()], "shift": [round(v, 6) for v in self.shift.tolist()]}


def align_views(
    run: LoadedRun,
    pairing: Pairing,
    split: Split,
    background: Tensor | None = None,  # [3]: render and compose on this colour; None: the pairing's backdrop
    progress: Callable[[int, int], None] | None = None,  # (views done, views)
) -> Aligned:
    """Each of `split`'s views with its pose corrected against its photo, the run's scene fixed."""
    built, device = run.built, run.built.device
    poses = split.poses.to(device)
    correction = PoseCorrection(len(split), device)
    generator = torch.Generator().manual_seed(0)
    built.train(False)
    frozen = [p for p in (*built.model.parameters(), *built.environments.parameters()) if p.requires_grad]
    try:
        for p in frozen:  # the scene is fixed: no gradient of the tables and networks is computed
            p.requires_grad_(False)
        _align(built, pairing, split, poses, correction, generator, background, progress)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        corrected = correction(poses, torch.arange(len(split), device=device)).cpu()
    return Aligned(corrected, *correction.sizes())


def _align(
    built: Built,
    pairing: Pairing,
    split: Split,
    poses: Tensor,
    correction: PoseCorrection,
    generator: torch.Generator,
    background: Tensor | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Trains each view's correction in turn (see `align_views`)."""
    device = poses.device
    height, width = split.camera.height, split.camera.width
    for view in range(len(split)):
        optimizer = torch.optim.Adam([correction.corrections], lr=ALIGN_LR)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1 ** (step / ALIGN_STEPS))
        photo = split.float_images(view).to(device)  # [H, W, 4]
        index = torch.full((ALIGN_RAYS,), view, device=device)
        for _ in range(ALIGN_STEPS):
            row = torch.randint(height, (ALIGN_RAYS,), generator=generator).to(device)
            col = torch.randint(width, (ALIGN_RAYS,), generator=generator).to(device)
            rays_o, rays_d = pixel_rays(correction(poses[index], index), col + 0.5, row + 0.5, split.camera)
            behind = (built.backdrop(pairing, rays_d) if background is None else background.to(device)).detach()
            rgba = photo[row, col]
            target = rgba[:, :3] * rgba[:, 3:] + behind * (1.0 - rgba[:, 3:])
            loss = torch.nn.functional.mse_loss(built.render_rays(pairing, rays_o, rays_d, behind).rgb, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if progress is not None:
            progress(view + 1, len(split))
