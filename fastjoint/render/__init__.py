"""Occupancy grids and the rendering of rays and images."""

from fastjoint.render.occupancy import make_estimators, update_occupancy
from fastjoint.render.rays import Field, RenderResult, render_image, render_rays

__all__ = ["Field", "RenderResult", "make_estimators", "render_image", "render_rays", "update_occupancy"]
