"""Datasets (Blender, nerfstudio, COLMAP), cameras and training rays."""

from fastjoint.data.cameras import Camera, image_rays, look_at, orbit_poses, pixel_rays
from fastjoint.data.formats import FORMATS, detect_format, load_split
from fastjoint.data.sampling import RaySampler
from fastjoint.data.split import SPLITS, Split

__all__ = [
    "FORMATS",
    "SPLITS",
    "Camera",
    "RaySampler",
    "Split",
    "detect_format",
    "image_rays",
    "load_split",
    "look_at",
    "orbit_poses",
    "pixel_rays",
]
