"""How far each scene reaches: a box, or a box inside unbounded space (a real capture).

A **bounded** scene (the kit's synthetic scenes, photos with transparency) lives in
`data.aabb`: its occupancy grid has `render.occ_levels` levels (1 by default) and its hash
grid spans the largest, with uniform steps of `render.step_size`.

An **unbounded** scene (a photographed object in a room or a landscape) also holds what is
around the box at any distance. Following mip-NeRF 360 and nerfacc's unbounded recipe:

- its hash grid spans all of space, **contracted** outside the box: with u the position
  relative to the box (the box is |u|_inf <= 1), c(u) = u inside and (2 - 1/|u|_inf) u/|u|_inf
  outside (the infinity norm, as MERF: the box stays a box and fills the grid's central half,
  everything beyond it to infinity the outer shell). Its grid's base and finest resolutions
  are doubled, so that the box keeps a bounded scene's detail;
- its occupancy grid has several levels, each twice the size of the one inside it (nerfacc's
  multi-level grid): as many as reach the extent its capture's instant-ngp `aabb_scale` says,
  else 4 (nerfacc's choice for unbounded scenes); beyond the largest level, the environment map;
- its steps lengthen with distance: max(step_size, t * cone_angle), cone angle 1/128 (at the
  kit's camera distance of 4, steps of the box's step size; 6x longer at 24);
- its rays start `render.near` from the camera (half the box's largest side under auto), but never
  more than nine tenths of the way from the camera to the box (`ray_near`): the fog that training
  grows just in front of a camera, to explain what only that camera saw, is never sampled, neither
  in training nor in renders, where the test views taken nearby would look through it (the fox,
  24.91 dB from the camera at seeds 0 and 1, 27.50 dB so at seeds 0 to 4; benchmarks/README.md,
  "The near plane").

`data.unbounded = "auto"` makes a scene unbounded when its photos (original style) are
opaque, in a real capture's format (nerfstudio, COLMAP), and the capture declares content
beyond the box (an instant-ngp `aabb_scale` that reaches past data.aabb). Without that
declaration auto keeps the box: on an object photographed against a plain backdrop the
unbounded model fills the space around it with fog that only the test views see (the kit's
digger on grey, 384 px, 1,500 steps: 15.78 dB unbounded against 25.78 dB bounded;
benchmarks/README.md). The decision is made once, from the training data, and kept in the
run's checkpoints (`Built.extents`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from fastjoint.config import Box, Config
from fastjoint.pairing import SCENES

CAPTURE_FORMATS = ("nerfstudio", "colmap")  # real captures; blender is the synthetic scenes' format
UNBOUNDED_LEVELS = 4  # occupancy levels of a scene named unbounded by hand whose capture declares no extent (nerfacc's)
MAX_LEVELS = 8
UNBOUNDED_CONE_ANGLE = 1.0 / 128
NEAR_SHARE = 0.9  # a ray starts at most this share of the way from its camera to data.aabb


@dataclass(frozen=True)
class SceneExtent:
    """How one scene is modelled and marched."""

    unbounded: bool  # hash grid over contracted space
    levels: int  # occupancy-grid levels
    cone_angle: float  # 0: uniform steps
    near: float = 0.0  # rays start this far from the camera (at most NEAR_SHARE of the way to the box)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(value: object) -> SceneExtent | None:
        if not isinstance(value, dict):
            return None
        try:  # checkpoints from before render.near have none: rays started at the camera
            return SceneExtent(bool(value["unbounded"]), int(value["levels"]), float(value["cone_angle"]), float(value.get("near", 0.0)))
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self, box: Box) -> str:
        """The extent in words, for the line training prints."""
        if not self.unbounded:
            return "bounded (data.aabb)" if self.levels == 1 else f"bounded, {self.levels} occupancy levels"
        reach = largest_half(box) * 2 ** (self.levels - 1)
        cone = f"cone angle 1/{1 / self.cone_angle:.0f}" if self.cone_angle > 0 else "uniform steps"
        near = f"; rays start {self.near:g} from the camera" if self.near > 0 else ""
        return f"unbounded (contracted beyond data.aabb; occupancy in {self.levels} levels to +-{reach:g}; {cone}{near})"


def largest_half(box: Box) -> float:
    """Half of the box's largest side."""
    return max(box[i + 3] - box[i] for i in range(3)) / 2


def levels_for_reach(reach: float, box: Box) -> int:
    """The fewest occupancy levels whose largest box (data.aabb doubled per level) holds a cube of half-size `reach`."""
    half = min(box[i + 3] - box[i] for i in range(3)) / 2
    centre_offset = max(abs(box[i + 3] + box[i]) / 2 for i in range(3))
    needed = (reach + centre_offset) / half
    return max(1, min(MAX_LEVELS, 1 + math.ceil(math.log2(needed) - 1e-9))) if needed > 1 else 1


def resolve_extents(
    config: Config,
    formats: Mapping[str, str],  # scene -> its original style's dataset format
    transparent: Mapping[str, bool],  # scene -> whether its photos have transparency
    reach: Mapping[str, float | None],  # scene -> the half-size its capture declares (aabb_scale), if any
) -> dict[str, SceneExtent]:
    """Each scene's extent, `data.unbounded`, `render.occ_levels` and `render.cone_angle` resolved."""
    data, render = config.data, config.render
    extents = {}
    for scene in SCENES:
        declared = reach.get(scene)
        declared_levels = None if declared is None else levels_for_reach(declared, data.aabb)
        if data.unbounded == "auto":
            unbounded = (
                config.model.encoder == "hashgrid"
                and formats[scene] in CAPTURE_FORMATS
                and not transparent[scene]
                and declared_levels is not None
                and declared_levels > 1
            )
        else:
            unbounded = data.unbounded in (scene, "both")
        if render.occ_levels != "auto":
            levels = render.occ_levels
        elif not unbounded:
            levels = 1
        else:
            levels = UNBOUNDED_LEVELS if declared_levels is None else declared_levels
        if render.cone_angle != "auto":
            cone = float(render.cone_angle)
        else:
            cone = UNBOUNDED_CONE_ANGLE if unbounded else 0.0
        if render.near != "auto":
            near = float(render.near)
        else:
            near = largest_half(data.aabb) if unbounded else 0.0
        extents[scene] = SceneExtent(unbounded, levels, cone, near)
    return extents


def default_extents(config: Config) -> dict[str, SceneExtent]:
    """The extents of a run whose checkpoint predates them: bounded, as its config says."""
    render = config.render
    levels = 1 if render.occ_levels == "auto" else render.occ_levels
    cone = 0.0 if render.cone_angle == "auto" else float(render.cone_angle)
    near = 0.0 if render.near == "auto" else float(render.near)
    return dict.fromkeys(SCENES, SceneExtent(False, levels, cone, near))


def saved_extents(state: Mapping) -> dict[str, SceneExtent] | None:
    """The extents a checkpoint was trained with (None in older checkpoints)."""
    saved = state.get("extents")
    if not isinstance(saved, dict):
        return None
    extents = {scene: SceneExtent.from_json(saved.get(scene)) for scene in SCENES}
    if any(extent is None for extent in extents.values()):
        return None
    return extents  # type: ignore[return-value]


def field_box(box: Box, extent: SceneExtent) -> Box:
    """The box a scene's hash grid is normalised by: data.aabb for an unbounded scene (contracted around
    it), else the occupancy grid's largest level (data.aabb scaled by 2^(levels-1) about its centre)."""
    scale = 1.0 if extent.unbounded else 2.0 ** (extent.levels - 1)
    centre = [(box[i] + box[i + 3]) / 2 for i in range(3)]
    half = [(box[i + 3] - box[i]) / 2 * scale for i in range(3)]
    return tuple(c - h for c, h in zip(centre, half, strict=True)) + tuple(c + h for c, h in zip(centre, half, strict=True))  # type: ignore[return-value]


def contract(u: Tensor) -> Tensor:  # [N, 3] relative to the box (inside: |u|_inf <= 1) -> [N, 3] in (-2, 2)
    """The infinity-norm contraction: identity in the box, (2 - 1/m) u/m outside, m = |u|_inf."""
    m = u.abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
    return torch.where(m > 1.0, (2.0 - 1.0 / m) * (u / m), u)


def ray_near(rays_o: Tensor, near: float, box: Tensor) -> Tensor:  # [n_rays, 3], box [6] -> [n_rays]
    """Where each ray starts: `near` from its camera, but at most NEAR_SHARE of the camera's distance to `box`
    (0 for a camera in the box), so that nothing in the box or just outside it is cut (rays that started at the
    box itself cost one of the fox's test views 5 dB)."""
    centre, half = (box[:3] + box[3:]) / 2, (box[3:] - box[:3]) / 2
    to_box = ((rays_o - centre).abs() - half).clamp(min=0.0).norm(dim=-1)
    return (NEAR_SHARE * to_box).clamp(max=near)
