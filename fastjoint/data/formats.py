"""The table of dataset formats, and one entry point for all of them: the folder's contents
say which format it holds.

- `transforms_train.json` (or another split's): Blender format (`blender.py`), poses as they are;
- `transforms.json`: nerfstudio format (`nerfstudio.py`), recentred into the box;
- `sparse/0/` or `sparse/` with a cameras file: a COLMAP model (`colmap.py`), recentred.

Each format's module defines its `DatasetFormat` record (see `split.py`); `FORMATS` lists
them in the order they are detected. Loading, the scene kit's writer, the CLI's `--format`
choices and the up-front check of test splits read this table: a new format is its module
and one line here.
"""

from __future__ import annotations

from pathlib import Path

from fastjoint.data.blender import BLENDER
from fastjoint.data.colmap import COLMAP
from fastjoint.data.nerfstudio import NERFSTUDIO
from fastjoint.data.split import DatasetFormat, IndivisibleSize, Split
from fastjoint.errors import UserError

FORMATS: dict[str, DatasetFormat] = {record.name: record for record in (BLENDER, NERFSTUDIO, COLMAP)}
"""Every dataset format by name, in the order they are detected."""

DEFAULT_FORMAT = "blender"
"""The format the scene kit writes unless told otherwise."""


def detect_format(root: str | Path) -> str:
    """The name of the format of the dataset in `root` (a key of FORMATS); UserError when the
    folder holds none of them."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    for name, record in FORMATS.items():
        if record.detect(root):
            return name
    expected = [record.expected for record in FORMATS.values()]
    listed = expected[0] if len(expected) == 1 else ", ".join(expected[:-1]) + ", or " + expected[-1]
    raise UserError(f"{root}: not a dataset (expected {listed})")


def load_split(root: str | Path, split: str, downscale: int = 1, downscale_key: str = "data.downscale") -> Split:
    """Loads one split (train, val or test) of the dataset in `root`, whatever its format, its
    images shrunk `downscale` times (set by the config key `downscale_key`, for messages).

    Raises UserError, one line naming the file at fault, for any problem with the files.
    """
    root = Path(root)
    try:
        return FORMATS[detect_format(root)].load(root, split, downscale)
    except IndivisibleSize as error:
        raise UserError(f"{downscale_key}: {error}") from None
