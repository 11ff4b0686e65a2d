"""The Blender-format loader: valid datasets, and one-line errors for malformed ones."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fastjoint.data import Camera, image_rays, load_split
from fastjoint.errors import UserError


def write_dataset(root, n=3, size=(8, 6), channels=4, extension=False, seed=0):
    """A small valid dataset: random images, camera poses on a circle."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    frames = []
    for i in range(n):
        image = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        iio.imwrite(root / "train" / f"r_{i}.png", image)
        pose = np.eye(4)
        pose[:3, 3] = [math.cos(i), math.sin(i), 0.5]
        frames.append({"file_path": f"./train/r_{i}" + (".png" if extension else ""), "transform_matrix": pose.tolist()})
    meta = {"camera_angle_x": 0.69, "frames": frames}
    (root / "transforms_train.json").write_text(json.dumps(meta))
    return meta


@pytest.mark.parametrize("extension", [False, True])
def test_loads_rgba_with_or_without_png_ending(tmp_path, extension):
    write_dataset(tmp_path, extension=extension)
    split = load_split(tmp_path, "train")
    assert split.images.shape == (3, 6, 8, 4) and split.transparent
    stored = iio.imread(tmp_path / "train" / "r_1.png")
    torch.testing.assert_close(split.images[1], torch.from_numpy(stored).float() / 255)
    assert split.camera == Camera(8, 6, 0.5 * 8 / math.tan(0.345))
    assert split.camera == Camera(8, 6, 0.5 * 8 / math.tan(0.345), 0.5 * 8 / math.tan(0.345), 4.0, 3.0)
    assert torch.equal(split.transform, torch.eye(4, dtype=torch.float64))  # Blender poses are kept as they are
    assert split.poses[2, 0, 3].item() == pytest.approx(math.cos(2))


def test_rgb_images_get_opaque_alpha(tmp_path):
    write_dataset(tmp_path, channels=3)
    split = load_split(tmp_path, "train")
    assert not split.transparent and torch.all(split.images[..., 3] == 1)


@pytest.mark.parametrize("transparent_pixel", [False, True])
def test_rgba_images_opaque_everywhere_are_opaque_photographs(tmp_path, transparent_pixel):
    write_dataset(tmp_path)
    for i, path in enumerate(sorted((tmp_path / "train").glob("*.png"))):
        image = iio.imread(path)
        image[..., 3] = 255
        if transparent_pixel and i == 2:
            image[5, 7, 3] = 254  # one pixel of one image, barely transparent, makes the set transparent
        iio.imwrite(path, image)
        assert iio.imread(path).shape[-1] == 4  # still RGBA on disk
    split = load_split(tmp_path, "train")
    assert split.transparent == transparent_pixel


def test_downscale_averages_premultiplied_colour(tmp_path):
    write_dataset(tmp_path, size=(8, 6))
    full = load_split(tmp_path, "train")
    half = load_split(tmp_path, "train", downscale=2)
    assert half.pixels.shape == (3, 3, 4, 4) and half.pixels.dtype == torch.uint8
    assert half.camera.focal == pytest.approx(full.camera.focal / 2)
    # Area filter on premultiplied colour, every 2x2 block, then rounded to 8 bits.
    blocks = full.images.reshape(3, 3, 2, 4, 2, 4)
    alpha = blocks[..., 3:].mean((2, 4))
    premultiplied = (blocks[..., :3] * blocks[..., 3:]).mean((2, 4))
    expected = torch.cat([premultiplied / alpha.clamp(min=1e-8), alpha], -1)
    torch.testing.assert_close(half.images, expected, rtol=0, atol=0.5 / 255 + 1e-6)
    assert (half.images - expected).abs().max() > 0  # the rounding is real: values are 8-bit
    torch.testing.assert_close(half.images * 255, (half.images * 255).round(), rtol=0, atol=1e-4)
    # Premultiplied averages composite like the full-resolution images (to the rounding).
    white = torch.ones(3)
    torch.testing.assert_close(
        half.on_background(white), full.on_background(white).reshape(3, 3, 2, 4, 2, 3).mean((2, 4)), rtol=0, atol=1 / 255
    )


def test_images_are_uint8_and_float_on_demand(tmp_path):
    write_dataset(tmp_path, n=4)
    split = load_split(tmp_path, "train")
    assert split.pixels.dtype == torch.uint8 and split.pixels.shape == (4, 6, 8, 4)
    stored = np.stack([iio.imread(tmp_path / "train" / f"r_{i}.png") for i in range(4)])
    assert np.array_equal(split.pixels.numpy(), stored)
    index = torch.tensor([3, 1])
    # Bit for bit the float32 that uint8 / 255 in numpy gives (what the loader held before).
    assert torch.equal(split.float_images(index), torch.from_numpy(stored[[3, 1]].astype(np.float32) / 255))
    background = torch.rand(3)
    assert torch.equal(split.on_background(background, index), split.on_background(background)[index])


def test_rays_point_through_pixel_centres():
    camera = Camera(4, 2, 2.0)
    origins, dirs = image_rays(torch.eye(4), camera)
    assert origins.shape == (8, 3) and torch.all(origins == 0)
    # The top-left pixel centre is (0.5, 0.5): x = -1.5 / 2, y = +0.5 / 2, z = -1.
    expected = torch.nn.functional.normalize(torch.tensor([-0.75, 0.25, -1.0]), dim=0)
    torch.testing.assert_close(dirs[0], expected)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(8))


def corrupt(root, change):
    path = root / "transforms_train.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.pop("camera_angle_x"), r"transforms_train.json: 'camera_angle_x' must be a number"),
        (lambda m: m.update(frames=[]), r"'frames' must be a non-empty list"),
        (lambda m: m["frames"][1].pop("transform_matrix"), r"frames\[1\] has no 'transform_matrix'"),
        (lambda m: m["frames"][2].update(transform_matrix=[[1, 0], [0, 1]]), r"frames\[2\].transform_matrix must be a 4x4"),
        (lambda m: m["frames"][0].pop("file_path"), r"frames\[0\] has no 'file_path'"),
        (lambda m: m["frames"][1].update(file_path="./train/missing"), r"missing.png: image not found \(.*frames\[1\]"),
    ],
)
def test_malformed_transforms(tmp_path, mutate, message):
    write_dataset(tmp_path)
    corrupt(tmp_path, mutate)
    with pytest.raises(UserError, match=message):
        load_split(tmp_path, "train")


def test_nan_in_a_pose(tmp_path):
    write_dataset(tmp_path)
    path = tmp_path / "transforms_train.json"
    path.write_text(path.read_text().replace("0.5]", "NaN]", 1))  # Python's json reads NaN
    with pytest.raises(UserError, match=r"frames\[0\].transform_matrix contains NaN"):
        load_split(tmp_path, "train")


def test_invalid_json(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "transforms_train.json").write_text('{"camera_angle_x": 0.5,')
    with pytest.raises(UserError, match=r"transforms_train.json: not valid JSON \(line 1"):
        load_split(tmp_path, "train")


def test_missing_folder_and_split(tmp_path):
    with pytest.raises(UserError, match="dataset folder not found"):
        load_split(tmp_path / "nothing", "train")
    write_dataset(tmp_path)
    with pytest.raises(UserError, match=r"transforms_test.json: not found"):
        load_split(tmp_path, "test")


def test_unreadable_image(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "train" / "r_1.png").write_bytes(b"not a png at all")
    with pytest.raises(UserError, match=r"r_1.png: cannot read image"):
        load_split(tmp_path, "train")


def test_images_of_different_sizes(tmp_path):
    write_dataset(tmp_path)
    iio.imwrite(tmp_path / "train" / "r_2.png", np.zeros((5, 5, 4), dtype=np.uint8))
    with pytest.raises(UserError, match=r"r_2.png: image is 5x5 but r_0.png is 8x6"):
        load_split(tmp_path, "train")


def test_downscale_must_divide(tmp_path):
    write_dataset(tmp_path, size=(8, 6))
    with pytest.raises(UserError, match=r"data.downscale: 4 does not divide the 8x6 images"):
        load_split(tmp_path, "train", downscale=4)
