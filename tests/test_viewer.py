"""The viewer: its rendering core without a browser, and `fastjoint view` in headless Chromium.

The browser tests need Debian's chromium (apt-get install -y chromium) and Playwright
(pip install -e ".[test]"). Without them they are skipped on a developer's machine, and
fail where the CI variable is set, so that CI cannot pass without running them.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import assert_one_line_error

from benchmarks import browser
from conftest import REPO, run_cli
from fastjoint.data import load_split, look_at
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.run import load_run
from fastjoint.viewer import Stroke, ViewerCore, camera_from_viser, compose, fit_painted, render_frame
from fastjoint.viewer.core import PAINTED, painted_colours, plane_points, with_normals


def matrix_quaternion(rotation: np.ndarray) -> np.ndarray:  # [3, 3] -> wxyz
    """A rotation matrix as a unit quaternion (Shepperd's method, written here for the test)."""
    m = rotation
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        return np.array([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
    q = np.zeros(4)
    q[0] = (m[k, j] - m[j, k]) / s
    q[1 + i] = 0.25 * s
    q[1 + j] = (m[j, i] + m[i, j]) / s
    q[1 + k] = (m[k, i] + m[i, k]) / s
    return q


def test_browser_camera_becomes_the_same_pose():
    """A viser camera (OpenCV axes, vertical fov) maps to fastjoint's pose (OpenGL axes) and focal length."""
    eye = torch.randn(3) * 2 + torch.tensor([0.0, 0.0, 4.0])
    pose = look_at(eye, torch.randn(3) * 0.2)
    opencv = pose[:3, :3].double().numpy() @ np.diag([1.0, -1.0, -1.0])
    fov = float(torch.empty(()).uniform_(0.3, 1.2))
    got, camera = camera_from_viser(eye.tolist(), matrix_quaternion(opencv), fov, 1.5, 40)
    torch.testing.assert_close(got, pose, atol=1e-5, rtol=0)
    assert (camera.width, camera.height) == (60, 40)
    assert camera.focal == pytest.approx(20.0 / math.tan(fov / 2))


@pytest.fixture
def view(run_copy):
    """A trained run, a test view of the target and the viewer's core on it."""
    run = load_run(run_copy)
    split = load_split(run.dataset(Pairing("target", ORIGINAL)), "test")
    return run, split.poses[1], split.camera, ViewerCore(run)


@pytest.mark.slow  # the session's trained run
def test_a_frame_composed_from_its_cache_is_the_render(view):
    """compose(render_frame(...), decoder) is render_image's picture, for every style of the run."""
    run, pose, camera, _ = view
    frame = render_frame(run.built, "target", pose, camera)
    for style in run.pairings.styles:
        expected = run.built.render_image(Pairing("target", style), pose, camera).numpy() * 255.0
        got = compose(frame, run.built.model.decoders[style]).astype(np.float64)
        assert np.abs(got - expected).max() <= 2.0, style  # rounding, and samples of weight < 1e-4 dropped


@pytest.mark.slow  # the session's trained run
def test_a_style_swap_neither_marches_nor_queries_the_grid(view, monkeypatch):
    run, pose, camera, core = view
    first = core.render(pose, camera)
    assert core.style == "recolour"

    def forbidden(*args, **kwargs):
        raise AssertionError("a style swap must reuse the cached frame")

    monkeypatch.setattr(run.built.model, "features", forbidden)
    monkeypatch.setattr(run.built, "samplers", {})
    original = core.set_style(ORIGINAL)
    monkeypatch.undo()
    expected = run.built.render_image(Pairing("target", ORIGINAL), pose, camera)
    assert np.abs(original.astype(float) - expected.numpy() * 255).max() <= 2.0
    # The recolour changes the target's yellow paint: the swap changes those pixels, not the background.
    changed = np.abs(original.astype(int) - first.astype(int)).sum(-1) > 30
    assert 0.02 < changed.mean() < 0.9, changed.mean()


@pytest.mark.slow  # the session's trained run
def test_painting_fits_a_decoder_to_the_painted_map(view):
    run, pose, camera, core = view
    base = run.built.model.decoders[ORIGINAL]
    centre = tuple(float(v) for v in torch.empty(2).uniform_(-0.4, 0.4))
    stroke = Stroke(centre, 0.35, (0.1, 0.85, 0.2))
    decoder = fit_painted(run.built.model.new_decoder(), base, [stroke])
    # The plane's points as the decoder reads them: each at a random normal (a draw of its own) where it reads one.
    points = with_normals(plane_points(64), decoder.inputs, torch.Generator().manual_seed(1))
    with torch.no_grad():
        fitted, painted, before = decoder(points), painted_colours(base, [stroke], points), base(points)
    distance = (points[:, :2] - torch.tensor(centre)).norm(dim=-1)
    inside, outside = distance < 0.25, distance > 0.5
    # Before the fit the disc is the base's colours; after it, close to the paint (a 5 -> 32 -> 3
    # network draws a soft disc, not a sharp one), at every normal.
    assert (before[inside] - torch.tensor(stroke.colour)).abs().mean() > 0.2
    assert (fitted[inside] - torch.tensor(stroke.colour)).abs().mean() < 0.12
    assert (fitted[outside] - before[outside]).abs().mean() < 0.05  # the rest of the map stays
    assert (fitted - painted).abs().mean() < 0.05

    # In the viewer: the frame follows the paint where the target's features fall under it.
    core.render(pose, camera)
    features = core.frame.cache.features
    whole = Stroke((0.0, 0.0), 1.5, (0.0, 1.0, 0.0))  # the whole plane, green
    image = core.paint(whole)
    assert core.style == PAINTED and PAINTED in core.styles
    opacity = torch.zeros(core.frame.cache.n_rays).index_add(0, core.frame.cache.ray_indices, core.frame.cache.weights)
    solid = (opacity > 0.95).reshape(camera.height, camera.width).numpy()
    assert solid.mean() > 0.05 and len(features) > 0
    pixels = image[solid].astype(float)
    assert (pixels[:, 1] - pixels[:, [0, 2]].max(axis=1)).mean() > 120  # green where the scene is
    assert core.clear_paint() is not None and core.style == "recolour" and PAINTED not in core.styles  # back to the base


@pytest.mark.slow  # the session's trained run
def test_a_painted_style_is_saved_as_a_style_of_the_run(view, run_copy):
    run, pose, camera, core = view
    with pytest.raises(Exception, match="nothing painted yet"):
        core.save_painted("green")
    core.render(pose, camera)
    core.paint(Stroke((0.0, 0.0), 1.5, (0.0, 1.0, 0.0)))
    path = core.save_painted("green")
    assert path == run_copy / "styles" / "green.pt"
    with pytest.raises(Exception, match="'green' is already a style"):
        core.save_painted("green")
    with pytest.raises(Exception, match="'recolour' is already a style"):
        core.save_painted("recolour")
    loaded = load_run(run_copy)
    assert loaded.pairings.painted == ("green",) and loaded.stored["green"].origin == "painted"
    green = loaded.built.render_image(Pairing("target", "green"), pose, camera)
    assert np.abs(green.numpy() * 255 - core.set_style("green")).max() <= 2.0
    result = run_cli("render", str(run_copy), "--pairing", "target:green")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # the session's trained run
def test_view_without_viser_is_one_line(tmp_path, run_copy):
    (tmp_path / "viser.py").write_text("raise ImportError('no viser here')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    result = subprocess.run(
        [sys.executable, "-m", "fastjoint", "view", str(run_copy)], env=env, capture_output=True, text=True, timeout=300
    )
    assert_one_line_error(result, 'needs viser: pip install -e ".[viewer]"')


@pytest.mark.slow  # the session's trained run
def test_a_socket_closed_before_its_request_leaves_the_output_clean(run_copy):
    """A connection that closes before it sends a request (a browser's spare socket, a port probe) prints
    nothing: websockets' "opening handshake failed" and its tracebacks once broke a browser test's output.
    A request that is not HTTP is still reported."""
    viewer = browser.Viewer(run_copy)
    try:
        viewer.url()  # serving
        with socket.create_connection(("127.0.0.1", viewer.port)):
            pass
        with socket.create_connection(("127.0.0.1", viewer.port)) as probe:
            probe.sendall(b"GET / HTTP/1.1\r\nHost: 127")  # half a request, then gone
        with socket.create_connection(("127.0.0.1", viewer.port)) as garbage:
            garbage.sendall(b"hello\r\n\r\n")
            garbage.recv(1)  # the server closes it once it has judged it
    finally:
        status = viewer.stop(signum=signal.SIGINT)
    assert status == 130, viewer.output
    after = viewer.lines_after_url()
    assert after.count("opening handshake failed") == 1, viewer.output  # the garbage's, not the two that left
    assert sum("EOFError" in line for line in after) == 0, viewer.output
    assert after[-1] == "viewer stopped: interrupted (Ctrl-C)", viewer.output


@pytest.mark.slow  # starts the CLI
def test_view_mistakes(tmp_path):
    assert_one_line_error(run_cli("view", str(tmp_path / "nothing")), "run folder not found")
    assert_one_line_error(run_cli("view", str(tmp_path), "--port", "0"), "--port: must be between 1 and 65535")


# --- in a real browser -----------------------------------------------------------------


def _browser_or_skip() -> None:
    try:
        browser.chromium_path()
    except browser.BrowserMissing as missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {missing}")
        pytest.skip(str(missing))


@pytest.mark.slow
@pytest.mark.browser
def test_view_in_headless_chromium(run_copy, tmp_path):
    """Opens the viewer, checks the scene shows, swaps a style, moves the camera, paints and saves."""
    _browser_or_skip()
    viewer = browser.Viewer(run_copy, "--moving-size", "24", "--resting-size", "48")
    try:
        url = viewer.url()
        assert url.startswith("http://127.0.0.1:"), url
        with browser.open_viewer(url) as page:
            sharp = page.wait_status(lambda s: s.height == 48 and s.style == "recolour", "the sharp first frame")
            assert sharp.scene == "target"
            recolour = page.scene_pixels()
            assert browser.not_blank(recolour) > 0.02, "the 3D view is blank"
            page.save_screenshot(tmp_path / "recolour.png")

            page.choose("Style", ORIGINAL)
            page.wait_status(lambda s: s.style == ORIGINAL and s.frame > sharp.frame, "the original style")
            original = _settled(page, unlike=recolour)
            changed = np.abs(original.astype(int) - recolour.astype(int)).sum(-1) > 40
            assert changed.mean() > 0.005, "swapping the style changed nothing on screen"
            # What changed is the scene, not the page: the panel and the background stay.
            assert changed.mean() < browser.not_blank(recolour) + 0.01

            # The radius first: the page sends a field's new value a moment after it is set, and
            # the camera's frames below give it that moment before Paint is clicked. The colour
            # stays the panel's default red (typing into viser's colour field did not always take).
            page.fill("Radius", "1.5")
            before = page.statuses()[-1]
            page.drag(12)
            page.wait_status(lambda s: s.frame > before.frame and s.height == 24, "frames while the camera moves")
            page.wait_status(lambda s: s.frame > before.frame and s.height == 48, "a sharp frame once it rests")

            painted_at = page.statuses()[-1].frame
            unpainted = _settled(page).astype(int)
            page.click("Paint")
            page.wait_status(lambda s: s.style == PAINTED and s.frame > painted_at, "the painted style")
            painted = _settled(page, unlike=unpainted.astype(np.uint8)).astype(int)
            Image.fromarray(painted.astype(np.uint8)).save(tmp_path / "painted-as-seen.png")  # for a failure's post-mortem
            scene = browser.not_blank(painted) > 0

            def reddish(image: np.ndarray) -> float:
                return float(((image[..., 0] - np.maximum(image[..., 1], image[..., 2])) > 60).mean())

            # The whole plane is painted: the scene turns the paint's red where it was not.
            assert reddish(painted) > reddish(unpainted) + 0.02, "the painted colour does not show on the scene"
            page.save_screenshot(tmp_path / "painted.png")

            page.fill("Save as", "green")
            page.click("Save style")
            style_file = run_copy / "styles" / "green.pt"
            for _ in range(300):
                if style_file.is_file():
                    break
                page.page.wait_for_timeout(100)
            assert style_file.is_file(), "Save style wrote no style file"
            assert scene
    finally:
        status = viewer.stop()
    assert status == 143, viewer.output  # stopped by SIGTERM
    assert "viewer stopped" in viewer.output


def _settled(page: browser.Page, unlike: np.ndarray | None = None, tries: int = 100) -> np.ndarray:
    """The 3D view once two screenshots in a row agree (the page has drawn the last frame).

    With `unlike`, a view equal to it does not count: the status of a new frame can arrive
    before the browser has drawn its image, on a busy machine by more than a screenshot's time.
    """
    last = page.scene_pixels()
    for _ in range(tries):
        page.page.wait_for_timeout(100)
        now = page.scene_pixels()
        if np.array_equal(now, last) and (unlike is None or not np.array_equal(now, unlike)):
            return now
        last = now
    raise AssertionError(f"the 3D view did not settle on a new picture after {tries} screenshots")


@pytest.mark.slow  # the session's trained run
def test_the_feature_plane_shows_the_decoder_the_scatter_and_the_paint(view):
    """The panel's plane: the current decoder's map (as analyze draws it), the scenes' features as dots, strokes outlined."""
    from fastjoint.plane import decoder_map

    run, pose, camera, core = view
    bare = core.feature_plane(64)
    assert np.array_equal(bare, decoder_map(run, "recolour", pixels=64))
    samples = core.surface("target", views=2)
    assert len(samples.features) > 0
    dotted = core.feature_plane(64)
    assert (dotted != bare).any(-1).mean() > 0.002  # dots where the target's features fall
    core.render(pose, camera)
    core.paint(Stroke((0.5, 0.5), 0.3, (1.0, 0.0, 1.0)))
    painted = core.feature_plane(64, with_scatter=False)
    inside = painted[14:19, 46:51].reshape(-1, 3).astype(int)  # around feature (0.5, 0.5): row 16, column 48
    assert (inside[:, [0, 2]].min(axis=1) - inside[:, 1]).mean() > 80, inside  # magenta
