"""Datasets and cameras."""

from fastjoint.data.blender import SPLITS, Split, load_split
from fastjoint.data.cameras import Camera, image_rays, look_at, orbit_poses, pixel_rays
from fastjoint.data.sampling import RaySampler

__all__ = ["SPLITS", "Camera", "RaySampler", "Split", "image_rays", "load_split", "look_at", "orbit_poses", "pixel_rays"]
