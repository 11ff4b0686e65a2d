"""Occupancy grids, samplers, and the rendering of rays and images."""

from fastjoint.render.cached import SampleCache, cache_samples, composite_cached, concat_caches, ray_offsets, select_rays
from fastjoint.render.occupancy import make_estimators, update_occupancy
from fastjoint.render.rays import Field, RenderResult, render_rays
from fastjoint.render.samplers import Sampler, occupancy_sampler, uniform_sampler

__all__ = [
    "Field",
    "SampleCache",
    "cache_samples",
    "composite_cached",
    "concat_caches",
    "ray_offsets",
    "select_rays",
    "RenderResult",
    "Sampler",
    "make_estimators",
    "occupancy_sampler",
    "render_rays",
    "uniform_sampler",
    "update_occupancy",
]
