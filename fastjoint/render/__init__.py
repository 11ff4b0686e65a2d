"""Occupancy grids, samplers, and the rendering of rays and images."""

from fastjoint.render.occupancy import make_estimators, update_occupancy
from fastjoint.render.rays import Field, RenderResult, render_rays
from fastjoint.render.samplers import Sampler, occupancy_sampler, uniform_sampler

__all__ = [
    "Field",
    "RenderResult",
    "Sampler",
    "make_estimators",
    "occupancy_sampler",
    "render_rays",
    "uniform_sampler",
    "update_occupancy",
]
