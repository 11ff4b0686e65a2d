"""train.appearance: per-image colour transforms take up a capture's exposure changes."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import torch
from test_extent import opaque_capture

from conftest import run_cli, tiny_config, write_config
from fastjoint.pairing import Pairing
from fastjoint.render.appearance import ImageColours
from fastjoint.run import load_run


def test_transforms_are_per_image_and_the_mean_for_renders():
    colours = ImageColours(2)
    with torch.no_grad():
        colours.matrices[0] = -0.5 * torch.eye(3)
        colours.offsets[1] = torch.tensor([0.1, 0.0, 0.0])
    rgb = torch.tensor([[0.4, 0.6, 0.8], [0.4, 0.6, 0.8]])
    torch.testing.assert_close(colours(rgb, torch.tensor([0, 1])), torch.tensor([[0.2, 0.3, 0.4], [0.5, 0.6, 0.8]]))
    torch.testing.assert_close(colours.mean(rgb[:1]), torch.tensor([[0.35, 0.45, 0.6]]))


def test_appearance_takes_up_the_exposure_of_darkened_photos(tmp_path):
    """Every other training photo of an opaque capture darkened to 60%: with per-image transforms, the
    darkened ones' transforms darken and the test views (not darkened) score higher than without."""
    kit = opaque_capture(tmp_path / "kit", aabb_scale=None)
    dataset = kit / "target" / "original"
    meta = json.loads((dataset / "transforms.json").read_text())
    darkened = meta["train_filenames"][::2]  # the split lists: the train split in their order
    for name in darkened:
        image = iio.imread(dataset / name).astype(np.float32) * 0.6
        iio.imwrite(dataset / name, (image + 0.5).astype(np.uint8))
    scores = {}
    for appearance in (False, True):
        config = tiny_config(kit, tmp_path / "runs", name=f"appearance-{appearance}", train={"steps": 300, "appearance": appearance})
        result = run_cli("train", str(write_config(config, tmp_path / f"{appearance}.toml")), "--no-render")
        assert result.returncode == 0, result.stderr
        scores[appearance] = json.loads((config.run_dir / "eval.json").read_text())["pairings"]["target:original"]["psnr"]
    run = load_run(tmp_path / "runs" / "appearance-True")
    colours = run.built.appearance[Pairing("target", "original").slug]
    names = meta["train_filenames"]
    grey = torch.full((len(names), 3), 0.5)
    with torch.no_grad():  # what each image's transform makes of mid-grey, as a gain
        gains = colours(grey, torch.arange(len(names))).mean(dim=1) / 0.5
    dark = torch.tensor([name in darkened for name in names])
    print(scores, gains[dark].mean().item(), gains[~dark].mean().item())
    # The darkened photos' transforms darken, relative to the others, most of the way to 0.6.
    assert gains[dark].mean() / gains[~dark].mean() < 0.8, (gains, dark)
    assert scores[True] > scores[False] + 1.0, scores
