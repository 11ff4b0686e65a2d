"""Datasets (Blender, nerfstudio, COLMAP), cameras and training rays."""

from fastjoint.data.cameras import Camera, image_rays, look_at, orbit_poses, pixel_rays
from fastjoint.data.formats import DEFAULT_FORMAT, FORMATS, detect_format, load_split
from fastjoint.data.sampling import RaySampler
from fastjoint.data.split import SPLITS, DatasetFormat, Split, WrittenViews

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "SPLITS",
    "Camera",
    "DatasetFormat",
    "RaySampler",
    "Split",
    "WrittenViews",
    "detect_format",
    "image_rays",
    "load_split",
    "look_at",
    "orbit_poses",
    "pixel_rays",
]
