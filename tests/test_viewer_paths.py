"""Camera paths in the viewer: keyframes, the path through them, saving it, and the same in headless Chromium.

The promise under test: a path saved by the viewer renders its keyframes exactly as the
viewer showed them (`fastjoint render --camera-path` renders with `render_image`).
"""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from test_viewer import _browser_or_skip, matrix_quaternion

from benchmarks import browser
from conftest import run_cli
from fastjoint.camera_path import load_camera_path
from fastjoint.data import look_at
from fastjoint.errors import UserError
from fastjoint.pairing import Pairing
from fastjoint.renders import to_uint8
from fastjoint.run import load_run, use_renderer
from fastjoint.viewer import ViewerCore, camera_from_viser
from fastjoint.viewer.paths import PathEditor, file_fov, keyframe_frames, render_command


def browser_camera(eye: torch.Tensor, target: torch.Tensor) -> tuple[list[float], np.ndarray]:
    """A camera at `eye` looking at `target` as viser reports it: position and wxyz (OpenCV axes)."""
    pose = look_at(eye, target)
    return eye.tolist(), matrix_quaternion(pose[:3, :3].double().numpy() @ np.diag([1.0, -1.0, -1.0]))


def random_cameras(n: int, centre: torch.Tensor, radius: float = 3.0) -> list[tuple[list[float], np.ndarray, float]]:
    """`n` browser cameras around `centre`, looking near it, each with its own vertical fov (radians)."""
    cameras = []
    for _ in range(n):
        direction = torch.nn.functional.normalize(torch.randn(3) + torch.tensor([0.0, 0.0, 0.8]), dim=0)
        position, wxyz = browser_camera(centre + radius * direction, centre + 0.1 * torch.randn(3))
        cameras.append((position, wxyz, float(torch.empty(()).uniform_(0.5, 0.9))))
    return cameras


def test_file_fov_is_what_a_saved_path_renders_with():
    """The viewer renders with file_fov(fov); the loaded path's camera of that keyframe has the same focal length, bit for bit."""
    for fov in torch.empty(200, dtype=torch.float64).uniform_(0.1, 2.5).tolist():
        snapped = file_fov(fov)
        assert abs(snapped - fov) < 1e-6 and file_fov(snapped) == snapped
        _, shown = camera_from_viser([0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], snapped, 1.5, 48)
        editor = PathEditor("run", 48)
        editor.add([0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], fov, 1.5)
        assert editor.path(1.0, 1.0, 1.5).camera(0) == shown


def test_keyframes_are_frames_of_the_saved_path_bit_for_bit(tmp_path):
    centre = torch.randn(3) * 0.2
    for keyframes, frames in ((3, 9), (3, 10), (4, 31), (2, 2), (1, 5)):
        editor = PathEditor(tmp_path, 24)
        cameras = random_cameras(keyframes, centre)
        for position, wxyz, fov in cameras:
            editor.add(position, wxyz, fov, 1.5)
        saved = editor.save(f"path-{keyframes}-{frames}", frames / 2.0, 2.0)
        data = json.loads(saved.read_text())
        path = load_camera_path(saved)
        assert len(path) == frames and (path.width, path.height, path.fps) == (36, 24, frames / 2.0)
        assert [k["camera_to_world"] for k in data["keyframes"]] == [k.to_json()["camera_to_world"] for k in editor.keyframes]
        landing = keyframe_frames(keyframes, frames)
        assert landing[0] == 0 and landing[keyframes - 1] == (frames - 1 if keyframes > 1 else 0)
        if (frames - 1) % max(1, keyframes - 1) == 0:
            assert len(landing) == keyframes
        for k, j in landing.items():
            keyframe = editor.keyframes[k]
            assert torch.equal(path.poses[j], keyframe.pose), (k, j)
            assert float(path.fov[j]) == keyframe.fov
            assert data["camera_path"][j]["camera_to_world"] == data["keyframes"][k]["camera_to_world"]
            pose, _ = camera_from_viser(*cameras[k][:2], cameras[k][2], 1.5, 24)
            assert torch.equal(keyframe.pose, pose)  # the pose the viewer renders that camera with
        # Between keyframes, the fov stays between the keyframes' fovs.
        fovs = [k.fov for k in editor.keyframes]
        assert min(fovs) - 1e-4 <= float(path.fov.min()) and float(path.fov.max()) <= max(fovs) + 1e-4


def test_path_editor_mistakes_are_one_line(tmp_path):
    editor = PathEditor(tmp_path, 24)
    with pytest.raises(UserError, match="no keyframes yet"):
        editor.save("a", 24.0, 1.0)
    with pytest.raises(UserError, match="no keyframes to remove"):
        editor.remove_last()
    position, wxyz, fov = random_cameras(1, torch.zeros(3))[0]
    for _ in range(3):
        editor.add(position, wxyz, fov, 1.0)
    with pytest.raises(UserError, match="2 frames cannot pass through 3 keyframes"):
        editor.save("a", 2.0, 1.0)
    with pytest.raises(UserError, match="frames per second must be positive"):
        editor.save("a", 0.0, 1.0)
    with pytest.raises(UserError, match="seconds must be positive"):
        editor.save("a", 24.0, -1.0)
    for bad in ("", "../up", "a/b", ".hidden", "two words"):
        with pytest.raises(UserError, match="path name: letters, digits"):
            editor.save(bad, 24.0, 1.0)
    saved = editor.save("tour.json", 24.0, 1.0)
    assert saved == tmp_path / "camera_paths" / "tour.json"
    with pytest.raises(UserError, match="tour.json exists; choose another name"):
        editor.save("tour", 24.0, 1.0)
    editor.remove_last()
    assert len(editor.keyframes) == 2
    editor.clear()
    assert editor.keyframes == []
    read_only = PathEditor(tmp_path, 24, read_only=True)
    read_only.add(position, wxyz, fov, 1.0)
    with pytest.raises(UserError, match="read-only"):
        read_only.save("other", 24.0, 1.0)
    assert not (tmp_path / "camera_paths" / "other.json").exists()
    assert render_command(tmp_path / "my run", saved) == f"fastjoint render '{tmp_path / 'my run'}' --camera-path {saved}"


@pytest.mark.slow  # the session's trained run
def test_a_saved_path_renders_the_viewers_keyframes_exactly(run_copy):
    """The viewer's frame of each keyframe is, pixel for pixel, render_image of the loaded path's frame."""
    run = load_run(run_copy)
    use_renderer(run, "fast")  # the viewer's and `fastjoint render`'s default
    core = ViewerCore(run)
    height, aspect = 24, 1.5
    aabb = torch.tensor(run.config.data.aabb)
    centre = (aabb[:3] + aabb[3:]) / 2
    editor = PathEditor(run_copy, height)
    shown = []
    for position, wxyz, fov in random_cameras(3, centre, radius=float((aabb[3:] - aabb[:3]).norm()) * 0.9):
        fov = file_fov(fov)  # as the viewer takes the browser's camera
        pose, camera = camera_from_viser(position, wxyz, fov, aspect, height)
        shown.append(core.render(pose, camera))
        editor.add(position, wxyz, fov, aspect)
    saved = editor.save("tour", 4.0, 2.25)  # 9 frames: the keyframes are frames 0, 4 and 8
    path = load_camera_path(saved)
    assert len(path) == 9 and (path.width, path.height) == (36, 24)
    pairing = Pairing(*core.shown)
    for k, j in enumerate((0, 4, 8)):
        assert browser.not_blank(shown[k]) > 0.02, "the camera sees nothing of the scene"
        rendered = to_uint8(run.built.render_image(pairing, path.poses[j], path.camera(j)))
        assert np.array_equal(rendered, shown[k]), (k, np.abs(rendered.astype(int) - shown[k]).max())
    between = to_uint8(run.built.render_image(pairing, path.poses[2], path.camera(2)))
    assert not np.array_equal(between, shown[0]) and not np.array_equal(between, shown[1])
    # And through the command line, as a user renders the saved file.
    result = run_cli("render", str(run_copy), "--camera-path", str(saved), "--pairing", pairing.name)
    assert result.returncode == 0, result.stderr
    for k, j in enumerate((0, 4, 8)):
        frame = iio.imread(run_copy / "renders" / pairing.slug / f"tour_{j:03d}.png")
        assert np.array_equal(frame, shown[k]), (k, np.abs(frame.astype(int) - shown[k]).max())


# --- in a real browser -----------------------------------------------------------------


def _wait_text(page: browser.Page, text: str, tries: int = 600) -> str:
    """The page's text once it contains `text` (polls `tries` times)."""
    body = ""
    for _ in range(tries):
        body = page.page.evaluate("() => document.body.innerText")
        if text in body:
            return body
        page.page.wait_for_timeout(100)
    raise AssertionError(f"the page never showed {text!r} ({tries} polls); its panel ends: {body[-400:]!r}")


def _rest_after_drag(page: browser.Page, dx: float) -> None:
    """Orbits the camera and waits for the sharp frame once it rests (the server then has its last pose)."""
    before = page.statuses()[-1]
    page.drag(12, dx)
    page.wait_status(lambda s: s.frame > before.frame and s.height == 24, "frames while the camera moves")
    moved = page.statuses()[-1]
    page.wait_status(lambda s: s.frame >= moved.frame and s.height == 48, "a sharp frame once it rests")


def _saved(page: browser.Page, path, tries: int = 300):
    for _ in range(tries):
        if path.is_file():
            return load_camera_path(path)
        page.page.wait_for_timeout(100)
    listing = sorted(p.name for p in path.parent.glob("*")) if path.parent.is_dir() else "no camera_paths folder"
    raise AssertionError(f"Save path wrote no {path.name} ({listing})")


@pytest.mark.slow
@pytest.mark.browser
def test_camera_path_in_headless_chromium(run_copy):
    """Adds three keyframes from different camera positions, saves the path, previews it."""
    _browser_or_skip()
    viewer = browser.Viewer(run_copy, "--moving-size", "24", "--resting-size", "48")
    try:
        with browser.open_viewer(viewer.url()) as page:
            page.wait_status(lambda s: s.height == 48, "the sharp first frame")
            _wait_text(page, "keyframes: 0 · 96 frames")
            for i, dx in enumerate((None, 5.0, -8.0)):
                if dx is not None:
                    _rest_after_drag(page, dx)
                page.click("Add keyframe")
                _wait_text(page, f"keyframes: {i + 1} ·")
            page.fill("Path name", "tour")
            page.click("Save path")
            saved = run_copy / "camera_paths" / "tour.json"
            path = _saved(page, saved)
            text = _wait_text(page, "render it with")
            assert f"fastjoint render {run_copy} --camera-path {saved}" in text

            data = json.loads(saved.read_text())
            keyframes = data["keyframes"]
            assert len(keyframes) == 3 and len(path) == 96 and path.height == 48
            assert path.width == round(48 * keyframes[0]["aspect"])
            assert data["camera_path"][0]["camera_to_world"] == keyframes[0]["camera_to_world"]
            assert data["camera_path"][-1]["camera_to_world"] == keyframes[-1]["camera_to_world"]
            assert torch.equal(path.poses[0], torch.tensor(keyframes[0]["camera_to_world"], dtype=torch.float32).reshape(4, 4))
            positions = np.array([k["camera_to_world"] for k in keyframes]).reshape(3, 4, 4)[:, :3, 3]
            for a, b in ((0, 1), (1, 2), (0, 2)):
                assert np.linalg.norm(positions[a] - positions[b]) > 0.05, "dragging did not move the camera"

            # The preview moves the browser's camera along the path, frame after frame, to the last keyframe.
            before = page.statuses()[-1]
            page.click("Preview")
            _wait_text(page, "preview done")
            assert page.statuses()[-1].frame > before.frame + 5, "the preview moved no camera"
            page.wait_status(lambda s: s.height == 48 and s.frame > before.frame, "a sharp frame after the preview")
            page.click("Add keyframe")
            _wait_text(page, "keyframes: 4 ·")
            page.fill("Path name", "after-preview")
            page.click("Save path")
            after_file = run_copy / "camera_paths" / "after-preview.json"
            _saved(page, after_file)
            after = json.loads(after_file.read_text())
            end = np.array(after["keyframes"][3]["camera_to_world"]).reshape(4, 4)
            last = np.array(keyframes[2]["camera_to_world"]).reshape(4, 4)
            np.testing.assert_allclose(end, last, atol=2e-3)
    finally:
        status = viewer.stop()
    assert status == 143, viewer.output  # stopped by SIGTERM, cleanly
    assert f"render it with: fastjoint render {run_copy} --camera-path {saved}" in viewer.output
    # The command the viewer gave, run: every frame of the path, and its video at the path's rate.
    result = run_cli("render", str(run_copy), "--camera-path", str(saved))
    assert result.returncode == 0, result.stderr
    folder = run_copy / "renders" / "target_recolour"  # the run's first transfer, render's default
    frames = sorted(folder.glob("tour_*.png"))
    assert len(frames) == 96 and iio.imread(frames[0]).shape == (48, path.width, 3)
    assert iio.imread(folder / "tour.mp4").shape[0] == 96 and iio.immeta(folder / "tour.mp4")["fps"] == 24
