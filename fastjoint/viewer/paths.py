"""Camera paths in the viewer: keyframes from the browser's camera, a preview, and a file that
`fastjoint render RUN --camera-path FILE` renders.

A keyframe is a view the viewer rendered: the pose `camera_from_viser` made of the browser's
camera (the run's world frame, OpenGL axes) and its vertical field of view. A path runs
`fps * seconds` frames along a smooth curve through the keyframes (`interpolate_poses`);
the first and the last keyframe, and every other one that falls on a frame, are frames of
the path bit for bit, at the viewer's resting size. The field of view is kept in degrees at
the precision `load_camera_path` reads it with (float32), and the viewer renders with that
same value (`file_fov`), so a saved path renders a keyframe exactly as the viewer showed it.

`PathEditor` is the keyframe list without a browser (tested on its own); `PathPanel` is its
folder in the viewer's panel.
"""

from __future__ import annotations

import math
import re
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from fastjoint.camera_path import DEFAULT_FPS, CameraPath, interpolate_poses, save_camera_path
from fastjoint.errors import UserError
from fastjoint.viewer.core import camera_from_viser

PATHS_FOLDER = "camera_paths"  # RUN/camera_paths/<name>.json
PATH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DEFAULT_SECONDS = 4.0


def file_fov(fov_y: float) -> float:  # radians -> radians
    """A vertical field of view as a camera-path file gives it back (degrees, float32): the viewer renders with it."""
    return math.radians(float(np.float32(math.degrees(fov_y))))


class Keyframe(NamedTuple):
    """One view of the path, as the viewer rendered it."""

    pose: Tensor  # [4, 4] camera-to-world, the run's world frame, OpenGL axes
    fov: float  # vertical field of view, degrees (a float32 value)
    aspect: float  # width / height of the browser's view

    @staticmethod
    def from_viser(
        position: Sequence[float],  # [3] world
        wxyz: Sequence[float],  # [4] camera-to-world rotation, OpenCV axes (viser's)
        fov_y: float,  # vertical field of view, radians
        aspect: float,  # width / height
    ) -> Keyframe:
        pose, _ = camera_from_viser(position, wxyz, file_fov(fov_y), aspect, 1)
        return Keyframe(pose, float(np.float32(math.degrees(fov_y))), float(aspect))

    def to_json(self) -> dict:
        return {"camera_to_world": [float(v) for v in self.pose.double().reshape(-1)], "fov": self.fov, "aspect": self.aspect}


def frame_count(fps: float, seconds: float) -> int:
    """The frames of a path `seconds` long at `fps` frames per second."""
    return max(1, round(fps * seconds))


def keyframe_frames(keyframes: int, frames: int) -> dict[int, int]:
    """The frame each keyframe falls on exactly, by keyframe (the first and the last always)."""
    if keyframes == 1:
        return {0: 0}
    segments = keyframes - 1
    return {k: k * (frames - 1) // segments for k in range(keyframes) if k * (frames - 1) % segments == 0}


def interpolate_fov(fovs: Sequence[float], frames: int) -> list[float]:
    """The field of view of each frame: linear between keyframes, timed as `interpolate_poses` times the poses."""
    if len(fovs) == 1 or frames == 1:
        return [fovs[0]] * frames
    segments = len(fovs) - 1
    out = []
    for j in range(frames):
        s = j * segments / (frames - 1)
        i = min(int(s), segments - 1)
        t = s - i
        out.append(fovs[i] * (1.0 - t) + fovs[i + 1] * t)
    return out


def keyframe_path(keyframes: Sequence[Keyframe], frames: int, width: int, height: int, fps: float) -> CameraPath:
    """`frames` frames along a smooth curve through the keyframes; those falling on a frame are that frame exactly."""
    assert keyframes and frames >= len(keyframes), (len(keyframes), frames)
    poses = interpolate_poses(torch.stack([k.pose for k in keyframes]), frames)
    fovs = interpolate_fov([k.fov for k in keyframes], frames)
    for k, j in keyframe_frames(len(keyframes), frames).items():
        poses[j], fovs[j] = keyframes[k].pose, keyframes[k].fov
    return CameraPath(poses, torch.tensor(fovs, dtype=torch.float32), width, height, fps)


def render_command(run_dir: Path, path: Path) -> str:
    """The command that renders a saved path."""
    return f"fastjoint render {shlex.quote(str(run_dir))} --camera-path {shlex.quote(str(path))}"


class PathEditor:
    """The keyframes of one browser's path, and the path they make; thread-safe.

    Args:
        run_dir: the run; paths are saved in RUN/camera_paths/.
        height: the frames' height in pixels (the viewer's resting size).
        read_only: refuse to save (the viewer must not write into the run).
    """

    def __init__(self, run_dir: Path, height: int, read_only: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.height = height
        self.read_only = read_only
        self.lock = threading.Lock()
        self._keyframes: list[Keyframe] = []

    @property
    def keyframes(self) -> list[Keyframe]:
        with self.lock:
            return list(self._keyframes)

    def add(self, position: Sequence[float], wxyz: Sequence[float], fov_y: float, aspect: float) -> Keyframe:
        """Adds the browser's camera (viser's convention, see `camera_from_viser`) as the last keyframe."""
        keyframe = Keyframe.from_viser(position, wxyz, fov_y, aspect)
        with self.lock:
            self._keyframes.append(keyframe)
        return keyframe

    def remove_last(self) -> None:
        with self.lock:
            if not self._keyframes:
                raise UserError("no keyframes to remove")
            self._keyframes.pop()

    def clear(self) -> None:
        with self.lock:
            self._keyframes.clear()

    def path(self, fps: float, seconds: float, aspect: float | None = None) -> CameraPath:
        """The path at `fps` frames per second for `seconds`, frames `height` high and `aspect` wide (default: the last keyframe's)."""
        keyframes = self.keyframes
        if not keyframes:
            raise UserError("no keyframes yet: move the camera and press Add keyframe")
        if not (math.isfinite(fps) and fps > 0):
            raise UserError(f"frames per second must be positive, got {fps:g}")
        if not (math.isfinite(seconds) and seconds > 0):
            raise UserError(f"seconds must be positive, got {seconds:g}")
        frames = frame_count(fps, seconds)
        if frames < len(keyframes):
            raise UserError(f"{frames} frames cannot pass through {len(keyframes)} keyframes: more seconds or more frames per second")
        aspect = keyframes[-1].aspect if aspect is None else aspect
        width = max(1, round(self.height * aspect))
        return keyframe_path(keyframes, frames, width, self.height, float(fps))

    def file(self, name: str) -> Path:
        """RUN/camera_paths/<name>.json; UserError if the name is no file name."""
        name = name.strip().removesuffix(".json")
        if not PATH_NAME.fullmatch(name):
            raise UserError(f"path name: letters, digits, '-', '_' and '.' (not first), got '{name}'")
        return self.run_dir / PATHS_FOLDER / f"{name}.json"

    def save(self, name: str, fps: float, seconds: float, aspect: float | None = None) -> Path:
        """Writes the path as RUN/camera_paths/<name>.json (keyframes kept under "keyframes"); never over another file."""
        if self.read_only:
            raise UserError("this viewer is read-only: it does not save camera paths into the run")
        target = self.file(name)
        path = self.path(fps, seconds, aspect)
        if target.exists():
            raise UserError(f"path name: {target} exists; choose another name")
        try:
            return save_camera_path(target, path, [k.to_json() for k in self.keyframes])
        except OSError as error:
            raise UserError(f"{target}: cannot write ({error.strerror or error})") from None


class PathPanel:
    """The "Camera path" folder of one browser's panel.

    Args:
        client: the browser (viser's ClientHandle).
        editor: its keyframes.
        camera: the browser's camera as last reported (position, wxyz, fov, aspect), or None.
    """

    def __init__(self, client: Any, editor: PathEditor, camera: Callable[[], Any]) -> None:
        self.client = client
        self.editor = editor
        self.camera = camera
        self.stop = threading.Event()
        self.closed = False
        self.previewing: threading.Thread | None = None
        gui = client.gui
        with gui.add_folder("Camera path"):
            self.add_button = gui.add_button("Add keyframe")
            self.count = gui.add_markdown("")
            self.remove_button = gui.add_button("Remove last")
            self.clear_button = gui.add_button("Clear")
            self.fps = gui.add_number("Frames per second", DEFAULT_FPS, min=1.0, max=240.0, step=1.0)
            self.seconds = gui.add_number("Seconds", DEFAULT_SECONDS, min=0.1, max=3600.0, step=0.1)
            self.preview_button = gui.add_button("Preview")
            self.name = gui.add_text("Path name", "path-1")
            self.save_button = gui.add_button("Save path", disabled=editor.read_only)
            self.message = gui.add_markdown("")
        self.add_button.on_click(lambda _: self._guarded(self._add))
        self.remove_button.on_click(lambda _: self._guarded(self._remove))
        self.clear_button.on_click(lambda _: self._guarded(self._clear))
        self.fps.on_update(lambda _: self._show_count())
        self.seconds.on_update(lambda _: self._show_count())
        self.preview_button.on_click(lambda _: self._guarded(self._preview))
        self.save_button.on_click(lambda _: self._guarded(self._save))
        self._show_count()

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except UserError as error:
            self.message.content = f"error: {error}"

    def _show_count(self) -> None:
        n = len(self.editor.keyframes)
        frames = frame_count(float(self.fps.value), float(self.seconds.value))
        self.count.content = f"keyframes: {n} · {frames} frames"

    def _current(self) -> Any:
        camera = self.camera()
        if camera is None:
            raise UserError("the browser has not sent its camera yet")
        return camera

    def _add(self) -> None:
        camera = self._current()
        self.editor.add(camera.position, camera.wxyz, camera.fov, camera.aspect)
        self._show_count()
        self.message.content = ""

    def _remove(self) -> None:
        self.editor.remove_last()
        self._show_count()

    def _clear(self) -> None:
        self.editor.clear()
        self._show_count()

    def _path(self) -> CameraPath:
        camera = self.camera()
        return self.editor.path(float(self.fps.value), float(self.seconds.value), None if camera is None else camera.aspect)

    def _save(self) -> None:
        camera = self.camera()
        aspect = None if camera is None else camera.aspect
        saved = self.editor.save(self.name.value, float(self.fps.value), float(self.seconds.value), aspect)
        command = render_command(self.editor.run_dir, saved)
        print(f"saved the camera path {saved}; render it with: {command}", flush=True)
        self.message.content = f"saved `{saved}`; render it with:\n\n`{command}`"

    def _preview(self) -> None:
        """Moves the browser's camera along the path at its frame rate; pressed again, stops."""
        if self.previewing is not None and self.previewing.is_alive():
            self.stop.set()
            return
        self._current()  # the preview starts from the browser's camera
        path = self._path()
        self.stop.clear()
        self.previewing = threading.Thread(target=self._play, args=(path,), name="path-preview", daemon=True)
        self.previewing.start()

    def _play(self, path: CameraPath) -> None:
        camera = self.client.camera
        up = np.array(camera.up_direction)
        distance = max(float(np.linalg.norm(camera.look_at - camera.position)), 1e-3)
        self.message.content = f"previewing {len(path)} frames at {path.fps:g} fps (press Preview to stop)"
        start = time.perf_counter()
        try:
            for j in range(len(path)):
                if self.stop.is_set():
                    break
                pose = path.poses[j].double().numpy()
                position, forward = pose[:3, 3], -pose[:3, 2]  # OpenGL axes: the camera looks down -z
                with self.client.atomic():
                    camera.up_direction = pose[:3, 1]
                    camera.position = position
                    camera.look_at = position + forward * distance
                    camera.fov = math.radians(float(path.fov[j]))
                self.stop.wait(max(0.0, start + (j + 1) / path.fps - time.perf_counter()))
        finally:
            if not self.closed:
                camera.up_direction = up  # the orbit keeps its own up again
            self.message.content = "preview stopped" if self.stop.is_set() else "preview done"

    def close(self) -> None:
        self.closed = True
        self.stop.set()
