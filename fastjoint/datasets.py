"""A config's datasets before training: written by the scene kit when it names one and they are
missing, every folder there, every test split that evaluation will need.
"""

from __future__ import annotations

from pathlib import Path

from fastjoint.config import DataConfig
from fastjoint.data import FORMATS, Split, detect_format, load_split
from fastjoint.errors import UserError
from fastjoint.log import console
from fastjoint.scenes import make_datasets


def load_scene_split(data: DataConfig, scene: str, dataset: str | Path | None, split: str) -> Split:
    """A split of one of a scene's datasets (`dataset`), shrunk by that scene's downscale."""
    return load_split(dataset, split, data.downscale_of(scene), data.downscale_key(scene))


def check_datasets(data: DataConfig, with_truth: bool = True) -> None:
    """Every dataset folder the config names exists (after the kit has written its own)."""
    pairings = data.pairings.trained + (data.pairings.transfers if with_truth else ())
    for pairing in pairings:
        path = data.dataset(pairing)
        if path is not None and not path.is_dir():
            raise UserError(f"{data.dataset_key(pairing)}: dataset folder not found: {path}")


def check_test_splits(data: DataConfig) -> None:
    """The test split that evaluation needs exists for every trained pairing and every ground truth.

    Checked before training, so that a missing split is found in seconds, not after the run.
    Only formats that keep a file per split (Blender's) are checked: the others (nerfstudio,
    COLMAP) hold out their test views from the one set of frames.
    """
    for pairing in data.pairings.all:
        path = data.dataset(pairing)
        split_file = None if path is None else FORMATS[detect_format(path)].split_file
        if split_file is None:
            continue
        if not split_file(path, "test").is_file():
            raise UserError(
                f"{split_file(path, 'test')}: not found ({data.dataset_key(pairing)} needs a test split "
                "for evaluation; train with --no-eval --no-render to go without)"
            )


def ensure_datasets(data: DataConfig) -> None:
    """Writes the scene kit's datasets when the config names a kit and a dataset is missing."""
    missing = [p for p in data.pairings.all if (path := data.dataset(p)) is not None and not path.is_dir()]
    if missing and data.kit:
        with console.status(f"[bold]Writing the scene kit's '{data.kit}' datasets (once)...") as status:

            def progress(done: int, total: int) -> None:
                status.update(f"[bold]Writing the scene kit's '{data.kit}' datasets (once): {done}/{total} images")

            make_datasets(data.kit, progress=progress)
    check_datasets(data)
