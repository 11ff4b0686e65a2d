"""What every format's loader returns (the images, poses and camera of one split), and what
every format is: a `DatasetFormat` record (its detection, loader, writer and file layout).

Images are held as 8-bit RGBA ([n, H, W, 4] uint8, straight alpha) and turned into float
only where they are used (`Split.float_images`, a batch of pixels in training), so an
800 px dataset of 100 views takes 256 MB instead of 1 GB. The float values are exactly
those of the file: `uint8 / 255` in float32.

Every problem with a user's files is a UserError naming the file (and the frame) at fault.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from fastjoint.data.cameras import Camera
from fastjoint.errors import UserError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """The views of one split of one dataset, in the scene's frame (see `transform`)."""

    pixels: Tensor  # [n, H, W, 4] uint8 RGBA, straight alpha (alpha 255 for RGB images)
    poses: Tensor  # [n, 4, 4] float32 camera-to-world, OpenGL camera axes
    camera: Camera
    transparent: bool  # some image has an alpha below 255 somewhere (RGBA opaque everywhere is an opaque photo)
    source: Path  # the file that describes the views (transforms JSON, COLMAP images file)
    # Scene-from-file similarity [4, 4] float64: the loader's recentring and scaling
    # (identity for Blender format); a file's point x is at transform @ [x, 1] in the scene.
    transform: Tensor = field(default_factory=lambda: torch.eye(4, dtype=torch.float64))
    names: tuple[str, ...] = ()  # each view's image file, relative to the dataset folder
    # Half-size, in the scene's units about its origin, of what the capture says it holds (from an
    # instant-ngp `aabb_scale`; fastjoint.render.extent sizes an unbounded scene's occupancy grid by it).
    reach: float | None = None

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def images(self) -> Tensor:  # [n, H, W, 4] float32
        """Every image in float32 (four times the memory of `pixels`; prefer `float_images`)."""
        return to_float(self.pixels)

    def float_images(self, index: Tensor | slice | int) -> Tensor:  # [..., H, W, 4] float32
        """Some of the images in float32: `uint8 / 255`, exactly the values of the files."""
        return to_float(self.pixels[index])

    def on_background(self, background: Tensor, index: Tensor | slice | int = slice(None)) -> Tensor:
        """Images (all, or those at `index`) composited over a background colour [3]: [..., H, W, 3]."""
        images = self.float_images(index)
        alpha = images[..., 3:]
        return images[..., :3] * alpha + background * (1.0 - alpha)


class WrittenViews(NamedTuple):
    """What a format's writer writes: every split's views of one centred pinhole camera
    (square pixels, principal point at the image centre, no distortion; the scene kit's)."""

    width: int  # pixels
    height: int  # pixels
    camera_angle_x: float  # horizontal field of view, radians
    poses: dict[str, np.ndarray]  # split -> [n, 4, 4] float64 camera-to-world, OpenGL camera axes
    names: dict[str, list[str]]  # split -> each view's image file, relative to the dataset folder

    @property
    def camera(self) -> Camera:
        return Camera.from_angle(self.width, self.height, self.camera_angle_x)


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset format: everything the rest of fastjoint knows about it.

    `fastjoint.data.formats.FORMATS` holds one per format, in the order they are detected;
    loading, the scene kit's writer, the CLI's `--format` choices and the up-front check of
    test splits all read it. A new format is its module (which defines its record) and one
    line in that table.
    """

    name: str  # as the CLI and the scene kit's stamp spell it
    expected: str  # what marks a folder as this format, for "not a dataset" (e.g. "transforms.json for nerfstudio")
    detect: Callable[[Path], bool]  # whether a folder holds a dataset of this format
    load: Callable[[Path, str, int], Split]  # (folder, split, downscale) -> the split; UserError naming the file
    write: Callable[[Path, WrittenViews], None]  # writes the description files (images are written by the caller)
    image_name: Callable[[str, int], str]  # (split, index) -> where the writer's images go, relative to the folder
    # The file a dataset must hold for each split, (folder, split) -> path; None for formats
    # that hold every split in one set of files (the splits are chosen from its frames).
    split_file: Callable[[Path, str], Path] | None = None


def to_float(pixels: Tensor) -> Tensor:  # uint8 [...] -> float32 [...]
    """8-bit values in [0, 1]; bit for bit what `imageio` uint8 / 255 in float32 gives."""
    return pixels.float() / 255


def read_json(path: Path) -> dict:
    """A JSON object from a user's file; one-line UserErrors for anything else."""
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno} column {error.colno}: {error.msg})") from None
    except (UnicodeDecodeError, OSError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: must hold a JSON object")
    return meta


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_frame_pose(frame: object, where: str) -> np.ndarray:
    """The camera-to-world `transform_matrix` of a transforms-JSON frame, float64 [4, 4]."""
    if not isinstance(frame, dict):
        raise UserError(f"{where} must be an object")
    if "transform_matrix" not in frame:
        raise UserError(f"{where} has no 'transform_matrix'")
    return read_pose(frame["transform_matrix"], f"{where}.transform_matrix")


def read_pose(matrix, where: str, rows: int = 4) -> np.ndarray:
    """A `rows`x4 matrix of finite numbers from JSON, as float64 [rows, 4]."""
    if not (
        isinstance(matrix, list)
        and len(matrix) == rows
        and all(isinstance(row, list) and len(row) == 4 and all(is_number(v) for v in row) for row in matrix)
    ):
        raise UserError(f"{where} must be a {rows}x4 matrix of numbers")
    pose = np.asarray(matrix, dtype=np.float64)
    if not np.isfinite(pose).all():
        raise UserError(f"{where} contains NaN or infinity")
    rotation = pose[:3, :3]
    scale = float(np.abs(rotation).max())
    if scale == 0.0 or abs(np.linalg.det(rotation / scale)) < 1e-6:
        raise UserError(f"{where} has a degenerate rotation (its 3x3 part is not invertible)")
    return pose


def read_image(path: Path) -> tuple[np.ndarray, bool]:  # [H, W, 4] uint8 straight alpha, has alpha
    """An RGB(A) image file as 8-bit RGBA; 16-bit images are rounded to 8 bits."""
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes), not an image")
    try:
        with warnings.catch_warnings():  # imageio warns while it tries plugins on a broken file
            warnings.simplefilter("ignore")
            image = iio.imread(path)
    except Exception as error:  # imageio raises many types for a broken file
        raise UserError(f"{path}: cannot read image ({type(error).__name__}: {error})".splitlines()[0]) from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"{path}: expected an RGB or RGBA image, got shape {image.shape}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.integer):
            image = image.astype(np.float64) / np.iinfo(image.dtype).max
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if image.shape[-1] == 3:
        return np.concatenate([image, np.full_like(image[..., :1], 255)], axis=-1), False
    # An alpha channel that is opaque everywhere (as some cameras and tools write) makes an
    # opaque photograph, not a cut-out: transparency is a property of the pixels.
    return image, bool((image[..., 3] < 255).any())


class IndivisibleSize(UserError):
    """A downscale that does not divide the images' size (load_split names the config key)."""


def prescaled(root: Path, paths: list[Path], downscale: int) -> list[Path] | None:
    """The images already shrunk `downscale` times, as nerfstudio and LLFF captures keep them
    (images_N/ beside images/, the same names), when every one of `paths` has its copy there."""
    if downscale == 1:
        return None
    found = []
    for path in paths:
        parts = path.relative_to(root).parts
        if parts[0] != "images":
            return None
        small = root.joinpath(f"images_{downscale}", *parts[1:])
        if not small.is_file():
            return None
        found.append(small)
    return found


def read_scaled(root: Path, paths: list[Path], downscale: int, size: tuple[int, int]) -> tuple[Tensor, bool]:
    """`read_images` of `paths` shrunk `downscale` times: from images_N/ when the capture has them
    (they must be the full size over N, as `size` (width, height) says), else shrunk as read."""
    small = prescaled(root, paths, downscale)
    if small is None:
        return read_images(paths, downscale, size)
    return read_images(small, 1, (size[0] // downscale, size[1] // downscale))


def read_images(paths: list[Path], downscale: int, size: tuple[int, int] | None = None) -> tuple[Tensor, bool]:
    """Reads a split's images into one uint8 tensor [n, H/downscale, W/downscale, 4].

    The tensor is allocated once, after the first image, and filled image by image (each
    downscaled as it is read), so the peak memory is the dataset plus one image. `size`
    (width, height) is what the dataset's metadata says the images are, if it says.
    """
    stack: Tensor | None = None
    transparent = False
    first: tuple[Path, tuple[int, int]] | None = None
    for i, path in enumerate(paths):
        image, alpha = read_image(path)
        transparent |= alpha
        height, width = image.shape[:2]
        if first is None:
            first = (path, (height, width))
            if size is not None and (width, height) != tuple(size):
                raise UserError(f"{path}: image is {width}x{height} but the dataset says {size[0]}x{size[1]}")
            if height % downscale or width % downscale:
                raise IndivisibleSize(f"{downscale} does not divide the {width}x{height} images of {path.parent}")
            stack = torch.empty((len(paths), height // downscale, width // downscale, 4), dtype=torch.uint8)
        elif (height, width) != first[1]:
            h, w = first[1]
            raise UserError(
                f"{path}: image is {width}x{height} but {first[0].name} is {w}x{h}; all images of a split must be the same size"
            )
        pixels = torch.from_numpy(image)
        stack[i] = downscale_image(pixels, downscale) if downscale > 1 else pixels
    assert stack is not None, "read_images needs at least one path"
    return stack, transparent


def downscale_image(pixels: Tensor, factor: int) -> Tensor:  # [H, W, 4] uint8 -> [H/f, W/f, 4] uint8
    """Area filter: averages premultiplied colour and alpha over f x f blocks (in float32,
    from `uint8 / 255`), returns straight alpha rounded to 8 bits (error at most 0.5 / 255).
    Compositing the result over any background equals the block average of the full-size
    images composited over it, to that rounding."""
    image = to_float(pixels)
    alpha = image[..., 3:]
    premultiplied = torch.cat([image[..., :3] * alpha, alpha], dim=-1).permute(2, 0, 1)  # [4, H, W]
    small = torch.nn.functional.avg_pool2d(premultiplied[None], factor)[0].permute(1, 2, 0)  # [H/f, W/f, 4]
    small_alpha = small[..., 3:]
    rgb = torch.where(small_alpha > 0, small[..., :3] / small_alpha.clamp(min=1e-8), torch.zeros_like(small[..., :3]))
    return (torch.cat([rgb, small_alpha], dim=-1).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


EVAL_EVERY = 8  # captures without split lists: every 8th view (sorted by file name) is held out


def select_views(names: list[str], lists: dict[str, list], split: str, where: str) -> list[int]:
    """Indices of a split's views among `names` (image paths relative to the dataset).

    With split lists (`lists` maps "train", "val", "test" to names, as nerfstudio's
    `train_filenames`, `val_filenames`, `test_filenames`): the views listed for the split
    (val and test stand in for each other when only one is given). Without: views sorted
    by name, every `EVAL_EVERY`-th (0, 8, 16, ...) is in val and test, the rest in train
    (LLFF's and mip-NeRF 360's hold-out; nerfstudio's default keeps a similar 90/10).
    """
    assert split in SPLITS, f"unknown split {split!r}"
    if lists:
        key = split if split in lists else {"val": "test", "test": "val"}.get(split, split)
        if key not in lists:
            raise UserError(f"{where}: has split lists ({', '.join(sorted(lists))}) but none for '{split}'")
        index = {_normal(name): i for i, name in enumerate(names)}
        chosen = []
        for name in lists[key]:
            if _normal(name) not in index:
                raise UserError(f"{where}: '{key}' lists '{name}', which is not one of its images")
            chosen.append(index[_normal(name)])
        if not chosen:
            raise UserError(f"{where}: the '{key}' list is empty")
        return chosen
    order = sorted(range(len(names)), key=lambda i: names[i])
    held_out = [i for rank, i in enumerate(order) if rank % EVAL_EVERY == 0]
    if split == "train":
        kept = [i for rank, i in enumerate(order) if rank % EVAL_EVERY != 0]
        return kept or held_out  # a capture of one view trains on it
    return held_out


def split_lists(meta: dict, where: str) -> dict[str, list]:
    """nerfstudio's optional `train_filenames`, `val_filenames`, `test_filenames` keys."""
    lists = {}
    for split in SPLITS:
        key = f"{split}_filenames"
        if key in meta:
            value = meta[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"{where}: '{key}' must be a list of file names")
            lists[split] = value
    return lists


def _normal(name: str) -> str:
    return Path(name.replace("\\", "/")).as_posix().removeprefix("./")
