"""Datasets (Blender, nerfstudio, COLMAP) and cameras."""

from fastjoint.data.cameras import Camera, image_rays, look_at, orbit_poses, pixel_rays
from fastjoint.data.formats import FORMATS, detect_format, load_split
from fastjoint.data.split import SPLITS, Split

__all__ = [
    "FORMATS",
    "SPLITS",
    "Camera",
    "Split",
    "detect_format",
    "image_rays",
    "load_split",
    "look_at",
    "orbit_poses",
    "pixel_rays",
]
