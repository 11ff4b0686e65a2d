"""`fastjoint view RUN`: the run in the browser, served by viser.

Each browser gets a `Session`: its own `ViewerCore` (scene, style, last frame, painting),
its panel, and a render thread. The thread renders the browser's camera at the moving
size (`moving` pixels high) as soon as it moves, and once more at the resting size when it
has rested for `rest_after` seconds. Choosing a style, comparing two, painting or
recolouring (fastjoint.viewer.controls), or tinting the pixels the reference does not cover
(*Show uncovered*), recomposes the last frame at once, from its cached samples. The status
line under the title tells what is on screen (frame number, size, pairing, milliseconds);
the browser tests read it. The *Camera path* folder is
`paths.PathPanel`. Stopping waits for the render threads and the callbacks under way, so no
torch work outlives the interpreter.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastjoint.datasets import load_scene_split
from fastjoint.errors import Interrupted, UserError
from fastjoint.log import console
from fastjoint.pairing import ORIGINAL, SCENES, Pairing
from fastjoint.run import LoadedRun, load_run, use_renderer
from fastjoint.viewer.controls import READ_ONLY, EditControls, writes_allowed
from fastjoint.viewer.core import SharedCoverage, Stroke, ViewerCore, camera_from_viser, fit_painted, require_feature_plane
from fastjoint.viewer.paths import PathEditor, PathPanel, file_fov

PLANE_PIXELS = 192  # side of the feature plane in the panel


def import_viser() -> Any:
    try:
        import viser
    except ImportError:
        raise UserError('fastjoint view needs viser: pip install -e ".[viewer]" (or pip install viser)') from None
    return viser


@dataclass(frozen=True)
class ViewSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    moving: int = 256  # image height while the camera moves
    resting: int = 512  # image height once it rests
    rest_after: float = 0.3  # seconds without camera motion before the sharp frame
    allow_writes: bool = False  # save styles and camera paths even when served beyond this machine

    @property
    def writable(self) -> bool:
        return writes_allowed(self.host, self.allow_writes)


class CameraState:
    """The browser's camera, as last reported."""

    def __init__(self, position: np.ndarray, wxyz: np.ndarray, fov: float, aspect: float) -> None:
        self.position, self.wxyz, self.fov, self.aspect = position, wxyz, fov, aspect


class Session:
    """One browser: its panel, its core and its render thread."""

    def __init__(self, client: Any, run: LoadedRun, settings: ViewSettings, shared: dict, coverage: SharedCoverage | None = None) -> None:
        self.client = client
        self.settings = settings
        # Surface features and the reference's coverage: computed once for all browsers.
        self.core = ViewerCore(run, surfaces=shared, writable=settings.writable, coverage=coverage)
        self.frames = 0
        self.camera: CameraState | None = None
        self.moved = 0.0  # when the camera last moved
        self.dirty = False
        self.sharp = True  # the frame on screen is at the resting size
        self.closed = False
        self.busy = 0  # panel callbacks under way (`close` waits for them)
        self.wake = threading.Condition()
        self.quiet = False  # set while the panel is changed from here, so its callbacks do nothing
        self.show_lock = threading.Lock()
        self._build_panel(run)
        client.camera.on_update(self._camera_moved)
        self.thread = threading.Thread(target=self._render_loop, name=f"render-{client.client_id}", daemon=True)
        self.thread.start()
        self._place_camera(run)

    # --- the panel ---------------------------------------------------------------------

    def _build_panel(self, run: LoadedRun) -> None:
        gui = self.client.gui
        gui.add_markdown(f"**fastjoint** · `{run.run_dir.name}` · step {run.step}")
        self.status = gui.add_markdown("waiting for the camera...")
        self.scene_box = gui.add_dropdown("Scene", list(SCENES), initial_value=self.core.scene)
        self.style_box = gui.add_dropdown("Style", self.core.styles, initial_value=self.core.style)
        self.uncovered_box = gui.add_checkbox(
            "Show uncovered",
            False,
            hint="tint magenta the surface whose style feature the reference does not cover: the styles extrapolate there",
        )
        self.edit_controls = EditControls(self)
        self.plane = gui.add_image(self.core.feature_plane(PLANE_PIXELS), label="Feature plane", format="png")
        with gui.add_folder("Paint the feature plane"):
            self.centre = gui.add_vector2("Centre", (0.0, 0.0), min=(-1.0, -1.0), max=(1.0, 1.0), step=0.01)
            self.radius = gui.add_slider("Radius", min=0.02, max=1.5, step=0.01, initial_value=0.3)
            self.colour = gui.add_rgb("Colour", (220, 30, 40))
            self.paint_button = gui.add_button("Paint")
            self.clear_button = gui.add_button("Clear paint")
            self.name = gui.add_text("Save as", "painted-1")
            self.save_button = gui.add_button("Save style", disabled=not self.core.writable)
            if not self.core.writable:
                gui.add_markdown(READ_ONLY)
            self.message = gui.add_markdown("")
        self.paths = PathPanel(self.client, PathEditor(run.run_dir, self.settings.resting, not self.settings.writable), lambda: self.camera)
        self.scene_box.on_update(lambda _: self._guarded(self._scene_chosen))
        self.style_box.on_update(lambda _: self._guarded(self._style_chosen))
        self.uncovered_box.on_update(lambda _: self._guarded(self._uncovered_chosen))
        self.paint_button.on_click(lambda _: self._guarded(self._paint))
        self.clear_button.on_click(lambda _: self._guarded(self._clear))
        self.save_button.on_click(lambda _: self._guarded(self._save))

    def _guarded(self, action) -> None:
        with self.wake:
            if self.quiet or self.closed:
                return
            self.busy += 1
        try:
            action()
        except UserError as error:
            self.message.content = f"error: {error}"
        finally:
            with self.wake:
                self.busy -= 1
                self.wake.notify_all()

    def _scene_chosen(self) -> None:
        self.core.set_scene(self.scene_box.value)
        self._request()

    def _style_chosen(self) -> None:
        start = time.perf_counter()
        self._show(self.core.set_style(self.style_box.value), start)
        self._update_plane()

    def _uncovered_chosen(self) -> None:
        start = time.perf_counter()
        show = bool(self.uncovered_box.value)
        if show:
            self.message.content = "measuring what the reference covers..."
        image = self.core.set_show_uncovered(show)
        self._show(image, start)
        self._update_plane()
        share = self.core.uncovered_share
        self.message.content = "" if share is None else f"uncovered (magenta): {share:.1%} of the visible surface in this frame"

    def _paint(self) -> None:
        start = time.perf_counter()
        centre = tuple(float(v) for v in self.centre.value)
        colour = tuple(float(c) / 255.0 for c in self.colour.value)
        self.message.content = "fitting the painted decoder..."
        image = self.core.paint(Stroke(centre, float(self.radius.value), colour))
        self._set_styles()
        self._show(image, start)
        self._update_plane()
        self.message.content = f"painted {len(self.core.strokes)} region(s) in {time.perf_counter() - start:.2f} s"

    def _clear(self) -> None:
        start = time.perf_counter()
        image = self.core.clear_paint()
        self._set_styles()
        self._show(image, start)
        self._update_plane()
        self.message.content = "paint cleared"

    def _save(self) -> None:
        name = self.name.value.strip()
        path = self.core.save_painted(name)
        self._set_styles()
        fit = self.core.run.stored[name].info["fit"]
        psnr = f"; {fit['frame_psnr']:.1f} dB on this frame" if "frame_psnr" in fit else ""
        self.message.content = f"saved {path} (the fitted decoder is {fit['mean_error']:.1f}/255 from the edited table on average{psnr})"

    def _set_styles(self) -> None:
        self.quiet = True
        try:
            self.style_box.options = self.core.styles
            self.style_box.value = self.core.style
            self.edit_controls.refresh_styles()
        finally:
            self.quiet = False

    def _update_plane(self) -> None:
        self.plane.image = self.core.feature_plane(PLANE_PIXELS)

    # --- the camera and frames ---------------------------------------------------------

    def _place_camera(self, run: LoadedRun) -> None:
        """Starts the browser at the target's first test view (or at a default one if its data moved)."""
        data = run.config.data
        centre = (np.array(data.aabb[:3]) + np.array(data.aabb[3:])) / 2
        position, fov = centre + np.array([3.0, -2.0, 1.6]), 0.6
        try:
            split = load_scene_split(data, "target", run.dataset(Pairing("target", ORIGINAL)), "test")
            position = split.poses[0, :3, 3].numpy().astype(np.float64)
            fov = 2.0 * math.atan(0.5 * split.camera.height / split.camera.focal)
        except UserError:
            pass
        camera = self.client.camera
        camera.up_direction = (0.0, 0.0, 1.0)
        camera.position = tuple(position.tolist())
        camera.look_at = tuple(centre.tolist())
        camera.fov = fov

    def _camera_moved(self, camera: Any) -> None:
        with self.wake:
            # The field of view as a saved camera path holds it, so that the path renders what is shown here.
            fov = file_fov(float(camera.fov))
            self.camera = CameraState(np.array(camera.position), np.array(camera.wxyz), fov, float(camera.aspect))
            self.moved = time.perf_counter()
            self.dirty = True
            self.wake.notify()

    def _request(self) -> None:
        with self.wake:
            self.dirty = True
            self.wake.notify()

    def _render_loop(self) -> None:
        settings = self.settings
        while True:
            with self.wake:
                while True:
                    if self.closed:
                        return
                    if self.dirty and self.camera is not None:
                        moving = True
                        break
                    if not self.sharp and self.camera is not None:
                        rested = time.perf_counter() - self.moved
                        if rested >= settings.rest_after:
                            moving = False
                            break
                        self.wake.wait(settings.rest_after - rested)
                    else:
                        self.wake.wait()
                self.dirty = False
                camera = self.camera
            height = settings.moving if moving else settings.resting
            start = time.perf_counter()
            try:
                pose, cam = camera_from_viser(camera.position, camera.wxyz, camera.fov, camera.aspect, height)
                image = self.core.render(pose, cam)
            except Exception as error:  # keep the viewer alive; say what went wrong
                console.print(f"[red]render failed:[/red] {type(error).__name__}: {error}")
                with self.wake:
                    self.sharp = True  # do not retry until the camera moves again
                continue
            with self.wake:
                stale = self.dirty  # the camera moved meanwhile: a newer frame follows at once
                self.sharp = not moving
            if moving or not stale:
                self._show(image, start, "jpeg" if moving else "png")

    def _show(self, image: np.ndarray | None, start: float, encoding: str = "png") -> None:
        """Shows a frame; moving frames go as JPEG (encoded about ten times faster than PNG), the rest as PNG."""
        if image is None or self.closed:
            return
        with self.show_lock:  # the render thread and the panel's callbacks both show frames
            self.frames += 1
            ms = (time.perf_counter() - start) * 1000.0
            height, width = image.shape[:2]
            with self.client.atomic():
                self.client.scene.set_background_image(image, format=encoding, jpeg_quality=90 if encoding == "jpeg" else None)
                self.status.content = f"frame {self.frames} · {width}x{height} px · {self.core.label} · {ms:.0f} ms"

    def close(self) -> None:
        """Stops the session: waits for its callbacks under way and for its render thread's frame."""
        self.paths.close()
        with self.wake:
            self.closed = True
            self.wake.notify_all()
            while self.busy:
                self.wake.wait()
        if threading.current_thread() is not self.thread:
            self.thread.join()


class PeerLeftEarly(logging.Filter):
    """Drops websockets' traceback for a connection that closed before it sent a whole request.

    Browsers open spare sockets ahead of need and close them unused (Chromium's preconnects), and
    port probes do the same; websockets logs each as "opening handshake failed" with three chained
    tracebacks, though nothing went wrong. Any other failed handshake is still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "opening handshake failed" or not record.exc_info:
            return True
        error = record.exc_info[1]
        while error is not None:
            if isinstance(error, EOFError):
                return False
            error = error.__cause__
        return True


PEER_LEFT_EARLY = PeerLeftEarly()


def serve(run_dir: str | Path, settings: ViewSettings, device: str | None = None, renderer: str = "fast") -> int:
    """Serves the viewer until Ctrl-C or SIGTERM, then raises Interrupted; `renderer`: see fastjoint.run.RENDERERS."""
    viser = import_viser()
    torch.set_grad_enabled(True)  # painting fits a decoder; rendering uses no_grad itself
    run = load_run(run_dir, device)
    use_renderer(run, renderer)
    require_feature_plane(run)
    logging.getLogger("websockets.server").addFilter(PEER_LEFT_EARLY)  # once: addFilter skips a repeat
    try:
        server = viser.ViserServer(host=settings.host, port=settings.port, verbose=False)
    except OSError as error:
        raise UserError(f"--port: cannot serve on {settings.host}:{settings.port} ({error.strerror or error})") from None
    server.scene.set_up_direction("+z")
    sessions: dict[int, Session] = {}
    shared: dict = {}
    coverage = SharedCoverage()
    stop = threading.Event()
    opening = threading.Lock()  # held while a session starts, so that none starts once stopping

    def connected(client: Any) -> None:
        with opening:
            if not stop.is_set():
                sessions[client.client_id] = Session(client, run, settings, shared, coverage)

    def disconnected(client: Any) -> None:
        session = sessions.pop(client.client_id, None)
        if session is not None:
            session.close()

    server.on_client_connect(connected)
    server.on_client_disconnect(disconnected)

    def sample_surfaces() -> None:  # the scatter on the feature plane, once, in the background
        core = ViewerCore(run, surfaces=shared)
        # The first fit in a process pays for setting up autograd and Adam: pay it now, not at the first paint.
        fit_painted(run.built.model.new_decoder(), run.built.model.decoders[ORIGINAL], [], steps=2)
        try:
            for scene in SCENES:
                core.surface(scene)
        except UserError as error:  # e.g. the run's datasets were moved: no scatter, say why
            console.print(f"[yellow]warning:[/yellow] no feature scatter: {error}")
            return
        for session in list(sessions.values()):
            session._update_plane()
        coverage.get(run)  # what *Show uncovered* needs, made before it is asked for

    surfaces = threading.Thread(target=sample_surfaces, name="surface-samples", daemon=True)
    surfaces.start()

    received: list[int] = []

    def stop_on(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C while stopping: at once
            os.write(2, b"viewer stopped at once\n")
            os._exit(128 + signum)
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, stop_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"fastjoint view: http://{settings.host}:{server.get_port()} (Ctrl-C to stop)", flush=True)
    if not settings.writable:
        print(
            f"fastjoint view: read-only, served to the network on {settings.host}: no style can be saved (--allow-writes allows it)",
            flush=True,
        )
    elif settings.allow_writes and not writes_allowed(settings.host, False):
        print(
            f"fastjoint view: writes allowed (--allow-writes): whoever reaches {settings.host} can save styles into {run.run_dir}",
            flush=True,
        )
    try:
        while not stop.wait(0.2):
            pass
    finally:
        stop.set()
        with opening:
            pass  # no session starts from here on
        # Threads still running torch when the interpreter exits abort it (`terminate called without an
        # active exception`): wait for every one of ours before returning.
        for session in list(sessions.values()):
            session.close()
        with contextlib.redirect_stdout(io.StringIO()):  # viser's own "Server stopped": the command says it
            server.stop()
        surfaces.join()
        for session in list(sessions.values()):
            session.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    signum = received[0] if received else signal.SIGINT
    raise Interrupted(signum, f"viewer stopped: {Interrupted(signum).how}")
