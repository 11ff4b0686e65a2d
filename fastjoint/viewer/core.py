"""The viewer's rendering core, without a browser.

A frame is rendered in two parts: the style-free part (marching the scene, its samples'
compositing weights and style features: `Frame`, kept for the last frame) and the decoder
(`compose`). Swapping the style re-runs only the second. Painting on the feature plane
makes a map (a base decoder's colours with painted discs over them) and fits a new decoder
to it in well under a second (`fit_painted`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from fastjoint.data import Camera, image_rays
from fastjoint.errors import UserError
from fastjoint.pairing import ORIGINAL, SCENES
from fastjoint.plane import PLANE_PIXELS, SurfaceSamples, plane_image, plane_points, scatter, surface_samples
from fastjoint.render import SampleCache, composite_cached
from fastjoint.run import Built, LoadedRun
from fastjoint.styles import StoredStyle, save_style, style_path

PAINTED = "painted"  # the name of the painted style until it is saved under another
FIT_PIXELS = 32  # side of the grid of feature-plane points a painted decoder is fitted on
FIT_STEPS = 300
FIT_LR = 5e-2
EDGE = 0.04  # width of a painted disc's soft edge, in feature units


# --- cameras ------------------------------------------------------------------------


def quaternion_matrix(wxyz: Sequence[float]) -> np.ndarray:  # [3, 3]
    """The rotation of a unit quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def camera_from_viser(
    position: Sequence[float],  # [3] world
    wxyz: Sequence[float],  # [4] camera-to-world rotation, OpenCV axes (x right, y down, z forward)
    fov_y: float,  # vertical field of view, radians
    aspect: float,  # width / height
    height: int,  # pixels
) -> tuple[Tensor, Camera]:  # pose [4, 4] (Blender axes: x right, y up, looking down -z), camera
    """A browser camera (viser's convention) as fastjoint's pose and pinhole camera."""
    rotation = quaternion_matrix(wxyz) @ np.diag([1.0, -1.0, -1.0])  # OpenCV -> OpenGL axes
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, np.asarray(position, dtype=np.float64)
    width = max(1, round(height * aspect))
    focal = 0.5 * height / math.tan(0.5 * fov_y)
    return torch.tensor(pose, dtype=torch.float32), Camera(width, height, focal)


# --- frames -------------------------------------------------------------------------


class Frame(NamedTuple):
    """The style-free part of one rendered view."""

    scene: str
    camera: Camera
    cache: SampleCache  # on the run's device
    background: Tensor  # [3]


@torch.no_grad()
def render_frame(built: Built, scene: str, pose: Tensor, camera: Camera) -> Frame:
    """Marches a view of a scene once and keeps its samples' weights and features."""
    rays_o, rays_d = image_rays(pose.to(built.device), camera)
    background = torch.tensor(built.config.render.background, device=built.device)
    return Frame(scene, camera, built.cache_samples(scene, rays_o, rays_d), background)


@torch.no_grad()
def compose(frame: Frame, decoder: Callable[[Tensor], Tensor]) -> np.ndarray:  # [H, W, 3] uint8
    """The frame in a style: the decoder (or its lookup table) on the cached features, composited with the cached weights."""
    cache = frame.cache
    rgb = composite_cached(cache, decoder(cache.features), frame.background)
    image = rgb.reshape(frame.camera.height, frame.camera.width, 3).clamp(0.0, 1.0)
    return (image.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


# --- painting -----------------------------------------------------------------------


class Stroke(NamedTuple):
    """A disc painted on the feature plane."""

    centre: tuple[float, float]  # feature coordinates in [-1, 1]^2
    radius: float  # feature units
    colour: tuple[float, float, float]  # RGB in [0, 1]


def painted_colours(
    base: nn.Module,
    strokes: Sequence[Stroke],
    points: Tensor,  # [N, 2]
) -> Tensor:  # [N, 3]
    """The painted map at `points`: the base decoder's colours, each stroke's disc over them (soft edge)."""
    with torch.no_grad():
        colours = base(points).clone()
    for stroke in strokes:
        centre = torch.tensor(stroke.centre, dtype=points.dtype, device=points.device)
        distance = (points - centre).norm(dim=-1)
        cover = ((stroke.radius - distance) / EDGE + 0.5).clamp(0.0, 1.0)[:, None]
        paint = torch.tensor(stroke.colour, dtype=colours.dtype, device=colours.device)
        colours = colours * (1.0 - cover) + paint * cover
    return colours


def fit_painted(
    new_decoder: nn.Module,
    base: nn.Module,
    strokes: Sequence[Stroke],
    steps: int = FIT_STEPS,
    pixels: int = FIT_PIXELS,
    seed: int = 0,
) -> nn.Module:
    """`new_decoder` (a fresh decoder of the run's shape) fitted to the painted map of `base`.

    It starts from the base decoder's weights, so unpainted regions need little change, and
    fits the map on a grid over [-1, 1]^2 (the whole plane: features the frame shows and
    those it does not).
    """
    device = next(base.parameters()).device
    points = plane_points(pixels, device)
    new_decoder.load_state_dict(base.state_dict())
    new_decoder.to(device).train()
    optimizer = torch.optim.Adam(new_decoder.parameters(), lr=FIT_LR, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(seed)
    jitter = 1.0 / pixels  # between grid points too, so that edges are learnt, not memorised
    for step in range(steps):
        for group in optimizer.param_groups:  # decays to a tenth, for a clean finish
            group["lr"] = FIT_LR * 0.1 ** (step / steps)
        shifted = points + (torch.rand(points.shape, generator=generator).to(device) - 0.5) * jitter
        loss = torch.nn.functional.mse_loss(new_decoder(shifted), painted_colours(base, strokes, shifted))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    new_decoder.train(False)
    return new_decoder


def draw_strokes(image: np.ndarray, strokes: Sequence[Stroke]) -> np.ndarray:
    """Outlines the painted discs (dark and light dashes) on a feature-plane image [P, P, 3]."""
    out = image.copy()
    pixels = out.shape[0]
    for stroke in strokes:
        n = max(24, int(stroke.radius * pixels * 2))
        angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        xs = stroke.centre[0] + stroke.radius * np.cos(angles)
        ys = stroke.centre[1] + stroke.radius * np.sin(angles)
        cols = np.clip(((xs + 1) / 2 * (pixels - 1)).round().astype(int), 0, pixels - 1)
        rows = np.clip(((1 - ys) / 2 * (pixels - 1)).round().astype(int), 0, pixels - 1)
        out[rows, cols] = np.where((np.arange(n) % 2 == 0)[:, None], 0, 255)
    return out


# --- the viewer's state -------------------------------------------------------------


def require_feature_plane(run: LoadedRun) -> None:
    """Refuses a run whose style feature is not 2-D (the plane cannot be painted)."""
    model = run.config.model
    if model.feature_dim != 2:
        raise UserError(
            f"{run.run_dir / 'config.toml'}: the viewer's feature plane needs model.feature_dim = 2 "
            f"(this run: {model.feature_dim}); eval, render and restyle work on it"
        )


class ViewerCore:
    """One browser's view of a run: scene, style, the last frame, the painting.

    Thread-safe: the viewer's callbacks and its render loop call it from several threads.
    """

    def __init__(
        self, run: LoadedRun, scene: str = "target", style: str | None = None, surfaces: dict[str, SurfaceSamples] | None = None
    ) -> None:
        require_feature_plane(run)
        self.run = run
        self.built = run.built
        self.lock = threading.RLock()
        self.decoders: dict[str, nn.Module] = dict(self.built.model.decoders.items())
        self.scene = scene
        self.style = style or (run.pairings.transfers[0].style if run.pairings.transfers else ORIGINAL)
        self.base = self.style  # the style painting starts from
        self.strokes: list[Stroke] = []
        self.frame: Frame | None = None
        self.shown = (scene, self.style)  # the pairing of the last image composed
        # The scenes' surface features for the scatter, by scene; shareable between cores.
        self._samples: dict[str, SurfaceSamples] = {} if surfaces is None else surfaces

    @property
    def styles(self) -> list[str]:
        return list(self.decoders)

    def render(self, pose: Tensor, camera: Camera) -> np.ndarray:
        """A new view: marches once, keeps the frame, composes it in the current style."""
        with self.lock:
            scene = self.scene
        frame = render_frame(self.built, scene, pose, camera)  # the slow part, outside the lock
        with self.lock:
            self.frame = frame
            self.shown = (frame.scene, self.style)
            return compose(frame, self._decode(self.style))

    def recompose(self) -> np.ndarray | None:
        """The last frame in the current style (no march, no grid query); None before any frame."""
        with self.lock:
            if self.frame is None:
                return None
            self.shown = (self.frame.scene, self.style)
            return compose(self.frame, self._decode(self.style))

    def _decode(self, style: str) -> Callable[[Tensor], Tensor]:
        """A style's decoder as the run renders it (a lookup table under the fast renderer)."""
        return self.built.lookup(f"viewer:{style}", self.decoders[style])

    def set_scene(self, scene: str) -> None:
        assert scene in SCENES, scene
        with self.lock:
            self.scene = scene

    def set_style(self, style: str) -> np.ndarray | None:
        """Swaps the decoder; returns the last frame recomposed in it."""
        with self.lock:
            if style not in self.decoders:
                raise UserError(f"unknown style '{style}' (this run has {', '.join(self.decoders)})")
            self.style = style
            if style != PAINTED:
                self.base = style
            return self.recompose()

    def paint(self, stroke: Stroke, steps: int = FIT_STEPS) -> np.ndarray | None:
        """Adds a stroke, fits the painted decoder, shows it; returns the last frame in it."""
        with self.lock:
            strokes = [*self.strokes, stroke]
            base = self.decoders[self.base]
        decoder = fit_painted(self.built.model.new_decoder(), base, strokes, steps)
        with self.lock:
            self.strokes = strokes
            self.decoders[PAINTED] = decoder
            self.style = PAINTED
            return self.recompose()

    def clear_paint(self) -> np.ndarray | None:
        """Forgets the strokes and the painted style; back to the base style."""
        with self.lock:
            self.strokes = []
            self.decoders.pop(PAINTED, None)
            return self.set_style(self.base)

    def save_painted(self, name: str, force: bool = False) -> Path:
        """Saves the painted decoder as the run's style `name` (RUN/styles/<name>.pt)."""
        with self.lock:
            if PAINTED not in self.decoders:
                raise UserError("nothing painted yet: paint a region of the feature plane first")
            self.run.check_new_style(name, force, key="style name")
            if name in self.decoders and not force:
                raise UserError(f"style name: '{name}' is already a style of this viewer")
            decoder = self.decoders[PAINTED]
            info = {"base": self.base, "strokes": [list(s.centre) + [s.radius] + list(s.colour) for s in self.strokes]}
            style = StoredStyle(name, decoder.state_dict(), origin="painted", info=info)
            path = save_style(self.run.run_dir, style)
            saved = self.built.model.new_decoder().to(self.built.device)
            saved.load_state_dict(decoder.state_dict())
            saved.train(False)
            self.decoders[name] = saved
            self.run = self.run._replace(stored={**self.run.stored, name: style})
            self.run = self.run._replace(pairings=self.run.pairings._replace(painted=(*self.run.pairings.painted, name)))
            assert path == style_path(self.run.run_dir, name)
            return path

    def surface(self, scene: str, views: int = 4) -> SurfaceSamples:
        """Features of a scene's visible surface points (a few training views; computed once)."""
        if scene not in self._samples:
            self._samples[scene] = surface_samples(self.run, scene, views)
        return self._samples[scene]

    def feature_plane(self, pixels: int = PLANE_PIXELS, with_scatter: bool = True) -> np.ndarray:
        """The current style's decoder over [-1, 1]^2, the scenes' features on it, the painted discs outlined."""
        with self.lock:
            decoder, strokes = self.decoders[self.style], list(self.strokes)
        image = plane_image(decoder, pixels, self.built.device)
        if with_scatter:
            for scene in SCENES:
                if scene in self._samples:
                    image = blend_scatter(image, self._samples[scene])
        return draw_strokes(image, strokes)


def blend_scatter(image: np.ndarray, samples: SurfaceSamples, max_points: int = 1500) -> np.ndarray:
    """analyze.scatter's dots over the map, the map kept at full strength where no dot falls."""
    dots = scatter(image, samples, max_points)
    faded = scatter(image, SurfaceSamples(samples.features[:0], samples.colours[:0]), max_points)
    return np.where((dots != faded).any(-1, keepdims=True), dots, image)
