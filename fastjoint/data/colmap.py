"""COLMAP sparse models: read (text and binary) and write, following COLMAP's documented
output format (https://colmap.github.io/format.html).

A dataset is a folder with `sparse/0/` (or `sparse/`) holding `cameras`, `images` and
optionally `points3D`, as `.bin` (preferred when both exist) or `.txt`, and the photos in
`images/`. COLMAP's poses are world-to-camera (`x_cam = R(q) x + t`) in OpenCV camera axes
(x right, y down, z forward); they become camera-to-world in OpenGL axes here. Splits:
an optional `splits.json` beside `sparse/` with `train_filenames`, `val_filenames`,
`test_filenames` (image names as in the model), else every 8th image by name is held out.
The scene is recentred into the box (see `recentre.py`, which uses the 3-D points for
forward-facing captures). The writer (the scene kit's) writes a text model of one PINHOLE
camera without 3-D points, splits.json, and the images as images/<split>_r_<i>.png.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastjoint.data.cameras import Camera
from fastjoint.data.recentre import apply_transform, scene_transform
from fastjoint.data.split import (
    SPLITS,
    DatasetFormat,
    Split,
    WrittenViews,
    read_json,
    read_scaled,
    select_views,
    split_lists,
)
from fastjoint.errors import UserError

# COLMAP's camera models: id, name, number of parameters. Only the first five are read;
# the others are listed so a model that uses them gets a clear error.
MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
MODEL_IDS = {name: (model_id, count) for model_id, (name, count) in MODELS.items()}
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # flips the camera's y and z axes (its own inverse)


@dataclass(frozen=True)
class ColmapCamera:
    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class ColmapImage:
    image_id: int
    qvec: tuple[float, float, float, float]  # qw, qx, qy, qz of R (world-to-camera)
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


@dataclass(frozen=True)
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: list[ColmapImage]
    points: np.ndarray | None  # [m, 3] float64 (xyz) or None without a points3D file
    images_file: Path
    cameras_file: Path


# --- finding and loading ------------------------------------------------------------


def model_folder(root: Path) -> Path | None:
    """sparse/0 or sparse, whichever holds a model."""
    for folder in (root / "sparse" / "0", root / "sparse"):
        if any((folder / f"cameras.{ext}").is_file() for ext in ("bin", "txt")):
            return folder
    return None


def is_colmap(root: Path) -> bool:
    return model_folder(root) is not None


def load_colmap(root: Path, split: str, downscale: int = 1) -> Split:
    """Loads one split of a COLMAP dataset; UserError naming the file on mistakes."""
    folder = model_folder(root)
    if folder is None:
        raise UserError(f"{root / 'sparse' / '0'}: no COLMAP model (cameras.bin or cameras.txt)")
    model = read_model(folder)
    where = model.images_file
    if not model.images:
        raise UserError(f"{where}: no images")
    names = [image.name for image in model.images]
    splits_path = root / "splits.json"
    lists = split_lists(read_json(splits_path), str(splits_path)) if splits_path.is_file() else {}
    chosen = select_views(names, lists, split, str(splits_path if lists else where))

    cameras = {}
    for i in chosen:
        image = model.images[i]
        if image.camera_id not in model.cameras:
            raise UserError(f"{where}: image '{image.name}' uses camera {image.camera_id}, which the cameras file lacks")
        cameras[i] = to_camera(model.cameras[image.camera_id], model.cameras_file)
    camera = cameras[chosen[0]]
    for i in chosen:
        if cameras[i] != camera:
            raise UserError(
                f"{where}: image '{model.images[i].name}' has other intrinsics than '{model.images[chosen[0]].name}'; "
                f"fastjoint needs one camera per split ('{split}')"
            )
    paths = []
    for i in chosen:
        path = root / "images" / model.images[i].name
        if not path.is_file():
            raise UserError(f"{path}: image not found ({where} names '{model.images[i].name}')")
        paths.append(path)

    poses = np.stack([to_pose(image.qvec, image.tvec) for image in model.images])
    transform = scene_transform(poses, model.points)
    moved = apply_transform(poses[chosen], transform)
    pixels, transparent = read_scaled(root, paths, downscale, (camera.width, camera.height))
    if downscale > 1:
        camera = camera.scaled(downscale)
    return Split(
        pixels,
        torch.from_numpy(moved.astype(np.float32)),
        camera,
        transparent,
        where,
        torch.from_numpy(transform),
        tuple(f"images/{model.images[i].name}" for i in chosen),
    )


def to_camera(camera: ColmapCamera, where: Path) -> Camera:
    """fastjoint's camera for a COLMAP camera (OpenCV's distortion order k1, k2, p1, p2, k3)."""
    p = camera.params
    if camera.model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        return Camera(camera.width, camera.height, f, f, cx, cy)
    if camera.model == "PINHOLE":
        fx, fy, cx, cy = p
        return Camera(camera.width, camera.height, fx, fy, cx, cy)
    if camera.model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        return Camera(camera.width, camera.height, f, f, cx, cy, (k, 0.0, 0.0, 0.0, 0.0))
    if camera.model == "RADIAL":
        f, cx, cy, k1, k2 = p
        return Camera(camera.width, camera.height, f, f, cx, cy, (k1, k2, 0.0, 0.0, 0.0))
    if camera.model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p
        return Camera(camera.width, camera.height, fx, fy, cx, cy, (k1, k2, p1, p2, 0.0))
    raise UserError(f"{where}: camera {camera.camera_id} uses model {camera.model}, not supported (use one of {', '.join(SUPPORTED)})")


def to_pose(qvec, tvec) -> np.ndarray:  # [4, 4] camera-to-world, OpenGL axes
    """COLMAP's world-to-camera (OpenCV axes) as a camera-to-world pose in OpenGL axes."""
    rotation = quaternion_to_rotation(np.asarray(qvec, dtype=np.float64))
    pose = np.eye(4)
    pose[:3, :3] = rotation.T
    pose[:3, 3] = -rotation.T @ np.asarray(tvec, dtype=np.float64)
    return pose @ OPENCV_TO_OPENGL


def from_pose(pose: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:  # [4, 4] -> qvec, tvec
    """Inverse of `to_pose`: COLMAP's qvec (qw >= 0) and tvec of a camera-to-world pose."""
    opencv = pose.astype(np.float64) @ OPENCV_TO_OPENGL
    rotation = opencv[:3, :3].T
    tvec = -rotation @ opencv[:3, 3]
    return tuple(float(v) for v in rotation_to_quaternion(rotation)), tuple(float(v) for v in tvec)


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:  # [4] (w, x, y, z) -> [3, 3]
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:  # [3, 3] -> [4] (w, x, y, z), w >= 0
    """The unit quaternion of a rotation: the eigenvector of the largest eigenvalue of the
    symmetric 4x4 matrix whose quadratic form is trace(R^T R(q)) (stable for any angle)."""
    k = np.array(
        [
            [r[0, 0] + r[1, 1] + r[2, 2], r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]],
            [r[2, 1] - r[1, 2], r[0, 0] - r[1, 1] - r[2, 2], r[0, 1] + r[1, 0], r[0, 2] + r[2, 0]],
            [r[0, 2] - r[2, 0], r[0, 1] + r[1, 0], r[1, 1] - r[0, 0] - r[2, 2], r[1, 2] + r[2, 1]],
            [r[1, 0] - r[0, 1], r[0, 2] + r[2, 0], r[1, 2] + r[2, 1], r[2, 2] - r[0, 0] - r[1, 1]],
        ]
    )
    q = np.linalg.eigh(k)[1][:, -1]
    return q if q[0] >= 0 else -q


# --- reading ------------------------------------------------------------------------


def read_model(folder: Path) -> ColmapModel:
    """cameras, images and (if present) points3D of a model folder, binary preferred."""
    files = {}
    for name in ("cameras", "images", "points3D"):
        binary, text = folder / f"{name}.bin", folder / f"{name}.txt"
        files[name] = binary if binary.is_file() else text if text.is_file() else None
    for name in ("cameras", "images"):
        if files[name] is None:
            raise UserError(f"{folder / (name + '.bin')}: not found (a COLMAP model needs {name}.bin or {name}.txt)")
    readers = {".bin": (_cameras_bin, _images_bin, _points_bin), ".txt": (_cameras_txt, _images_txt, _points_txt)}
    cameras = readers[files["cameras"].suffix][0](files["cameras"])
    images = readers[files["images"].suffix][1](files["images"])
    points = readers[files["points3D"].suffix][2](files["points3D"]) if files["points3D"] is not None else None
    return ColmapModel(cameras, images, points, files["images"], files["cameras"])


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of a text file, comments dropped, blank lines kept."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if not line.lstrip().startswith("#")]


def _numbers(path: Path, line_number: int, fields: list[str], kinds: str) -> list:
    """Parses fields as 'i' (int) or 'f' (finite float); UserError naming the line."""
    if len(fields) < len(kinds):
        raise UserError(f"{path}: line {line_number}: expected {len(kinds)} values, got {len(fields)}")
    try:
        values = [int(v) if kind == "i" else float(v) for v, kind in zip(fields, kinds)]
    except ValueError:
        raise UserError(f"{path}: line {line_number}: not a number in '{' '.join(fields)}'") from None
    if not all(np.isfinite(v) for v in values):
        raise UserError(f"{path}: line {line_number}: contains NaN or infinity")
    return values


def _check_model(path: Path, where: str, camera_id: int, model: str, width: int, height: int, params: list) -> ColmapCamera:
    if model not in MODEL_IDS:
        raise UserError(f"{path}: {where}: unknown camera model {model!r}")
    if len(params) != MODEL_IDS[model][1]:
        raise UserError(f"{path}: {where}: model {model} takes {MODEL_IDS[model][1]} parameters, got {len(params)}")
    if width <= 0 or height <= 0:
        raise UserError(f"{path}: {where}: width and height must be positive")
    return ColmapCamera(camera_id, model, width, height, tuple(float(v) for v in params))


def _cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for n, line in _text_lines(path):
        if not line:
            continue
        fields = line.split()
        if len(fields) < 4:
            raise UserError(f"{path}: line {n}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        camera_id, width, height = _numbers(path, n, [fields[0], fields[2], fields[3]], "iii")
        params = _numbers(path, n, fields[4:], "f" * len(fields[4:]))
        cameras[camera_id] = _check_model(path, f"line {n}", camera_id, fields[1], width, height, params)
    return cameras


def _images_txt(path: Path) -> list[ColmapImage]:
    """Two lines per image: the pose line, then its 2-D points (possibly empty, skipped)."""
    lines = _text_lines(path)
    images, i = [], 0
    while i < len(lines):
        n, line = lines[i]
        if not line:
            i += 1
            continue
        fields = line.split(maxsplit=9)
        if len(fields) < 10:
            raise UserError(f"{path}: line {n}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        values = _numbers(path, n, fields[:9], "ifffffffi")
        images.append(ColmapImage(values[0], tuple(values[1:5]), tuple(values[5:8]), values[8], fields[9]))
        i += 2
    return images


def _points_txt(path: Path) -> np.ndarray:
    points = []
    for n, line in _text_lines(path):
        if line:
            points.append(_numbers(path, n, line.split()[1:4], "fff"))
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


class _Reader:
    """Little-endian binary fields with a UserError at a truncated end."""

    def __init__(self, path: Path) -> None:
        try:
            self.data = path.read_bytes()
        except OSError as error:
            raise UserError(f"{path}: cannot read ({error})") from None
        self.path, self.offset = path, 0

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise UserError(f"{self.path}: truncated at byte {self.offset} (not a COLMAP binary file?)")
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def skip(self, size: int) -> None:
        if self.offset + size > len(self.data):
            raise UserError(f"{self.path}: truncated at byte {self.offset} (not a COLMAP binary file?)")
        self.offset += size

    def string(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise UserError(f"{self.path}: truncated at byte {self.offset} (an image name has no end)")
        try:
            value = self.data[self.offset : end].decode()
        except UnicodeDecodeError:
            raise UserError(f"{self.path}: an image name at byte {self.offset} is not UTF-8") from None
        self.offset = end + 1
        return value

    def finite(self, values: tuple, what: str) -> tuple:
        if not all(np.isfinite(v) for v in values):
            raise UserError(f"{self.path}: {what} contains NaN or infinity")
        return values


def _cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    reader, cameras = _Reader(path), {}
    (count,) = reader.read("Q")
    for _ in range(count):
        camera_id, model_id, width, height = reader.read("iiQQ")
        if model_id not in MODELS:
            raise UserError(f"{path}: camera {camera_id}: unknown camera model id {model_id}")
        name, n_params = MODELS[model_id]
        params = reader.finite(reader.read("d" * n_params), f"camera {camera_id}")
        cameras[camera_id] = _check_model(path, f"camera {camera_id}", camera_id, name, width, height, list(params))
    return cameras


def _images_bin(path: Path) -> list[ColmapImage]:
    reader, images = _Reader(path), []
    (count,) = reader.read("Q")
    for _ in range(count):
        image_id, *pose, camera_id = reader.read("idddddddi")
        reader.finite(tuple(pose), f"image {image_id}'s pose")
        name = reader.string()
        (n_points,) = reader.read("Q")
        reader.skip(24 * n_points)  # x, y (double) and point3D_id (int64) each
        images.append(ColmapImage(image_id, tuple(pose[:4]), tuple(pose[4:]), camera_id, name))
    return images


def _points_bin(path: Path) -> np.ndarray:
    reader, points = _Reader(path), []
    (count,) = reader.read("Q")
    for _ in range(count):
        _, x, y, z, _, _, _, _ = reader.read("QdddBBBd")
        (track,) = reader.read("Q")
        reader.skip(8 * track)  # image_id, point2D_idx (int32 each)
        points.append(reader.finite((x, y, z), "a point"))
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


# --- writing ------------------------------------------------------------------------


def write_model(
    folder: Path,
    cameras: list[ColmapCamera],
    images: list[ColmapImage],
    points: np.ndarray | None = None,  # [m, 3] xyz; written grey, with error 0 and empty tracks
    binary: bool = False,
) -> None:
    """Writes a model as cameras, images (and points3D) .txt or .bin files. Images are
    written without 2-D points (their observations are not known to the scene kit)."""
    folder.mkdir(parents=True, exist_ok=True)
    points = np.zeros((0, 3)) if points is None else points
    if binary:
        data = [struct.pack("<Q", len(cameras))]
        for c in cameras:
            data.append(struct.pack("<iiQQ", c.camera_id, MODEL_IDS[c.model][0], c.width, c.height))
            data.append(struct.pack("<" + "d" * len(c.params), *c.params))
        (folder / "cameras.bin").write_bytes(b"".join(data))
        data = [struct.pack("<Q", len(images))]
        for im in images:
            data.append(struct.pack("<idddddddi", im.image_id, *im.qvec, *im.tvec, im.camera_id))
            data.append(im.name.encode() + b"\0" + struct.pack("<Q", 0))
        (folder / "images.bin").write_bytes(b"".join(data))
        data = [struct.pack("<Q", len(points))]
        for i, p in enumerate(points):
            data.append(struct.pack("<QdddBBBdQ", i + 1, *p, 128, 128, 128, 0.0, 0))
        (folder / "points3D.bin").write_bytes(b"".join(data))
        return
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [f"{c.camera_id} {c.model} {c.width} {c.height} " + " ".join(repr(v) for v in c.params) for c in cameras]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for im in images:
        lines.append(" ".join([str(im.image_id), *(repr(v) for v in (*im.qvec, *im.tvec)), str(im.camera_id), im.name]))
        lines.append("")
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:", "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]"]
    lines += [f"{i + 1} {p[0]!r} {p[1]!r} {p[2]!r} 128 128 128 0.0" for i, p in enumerate(points.tolist())]
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")


def write_colmap(root: Path, views: WrittenViews) -> None:
    """sparse/0/{cameras,images,points3D}.txt (one PINHOLE camera, no 3-D points) and splits.json."""
    camera = views.camera
    cameras = [ColmapCamera(1, "PINHOLE", camera.width, camera.height, (camera.focal, camera.focal_y, camera.cx, camera.cy))]
    images = []
    for split in SPLITS:
        for name, pose in zip(views.names[split], views.poses[split]):
            qvec, tvec = from_pose(pose)
            images.append(ColmapImage(len(images) + 1, qvec, tvec, 1, name.removeprefix("images/")))
    write_model(root / "sparse" / "0", cameras, images)
    lists = {f"{split}_filenames": [name.removeprefix("images/") for name in views.names[split]] for split in SPLITS}
    (root / "splits.json").write_text(json.dumps(lists, indent=1))


def image_name(split: str, index: int) -> str:
    """Where the writer's view `index` of `split` goes, relative to the dataset folder."""
    return f"images/{split}_r_{index}.png"


COLMAP = DatasetFormat(
    name="colmap",
    expected="sparse/0/cameras.bin|txt for COLMAP",
    detect=is_colmap,
    load=load_colmap,
    write=write_colmap,
    image_name=image_name,
)
