"""One entry point for every dataset format: the folder's contents say which it is.

- `transforms_train.json` (or another split's): Blender format (`blender.py`), poses as they are;
- `transforms.json`: nerfstudio format (`nerfstudio.py`), recentred into the box;
- `sparse/0/` or `sparse/` with a cameras file: a COLMAP model (`colmap.py`), recentred.
"""

from __future__ import annotations

from pathlib import Path

from fastjoint.data.blender import load_blender, transforms_path
from fastjoint.data.colmap import is_colmap, load_colmap
from fastjoint.data.nerfstudio import is_nerfstudio, load_nerfstudio
from fastjoint.data.split import SPLITS, Split
from fastjoint.errors import UserError

FORMATS = ("blender", "nerfstudio", "colmap")


def detect_format(root: str | Path) -> str:
    """ "blender", "nerfstudio" or "colmap"; UserError when the folder holds none of them."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    if any(transforms_path(root, split).is_file() for split in SPLITS):
        return "blender"
    if is_nerfstudio(root):
        return "nerfstudio"
    if is_colmap(root):
        return "colmap"
    raise UserError(
        f"{root}: not a dataset (expected transforms_train.json for Blender format, "
        "transforms.json for nerfstudio, or sparse/0/cameras.bin|txt for COLMAP)"
    )


def load_split(root: str | Path, split: str, downscale: int = 1) -> Split:
    """Loads one split (train, val or test) of the dataset in `root`, whatever its format.

    Raises UserError, one line naming the file at fault, for any problem with the files.
    """
    root = Path(root)
    loader = {"blender": load_blender, "nerfstudio": load_nerfstudio, "colmap": load_colmap}[detect_format(root)]
    return loader(root, split, downscale)
