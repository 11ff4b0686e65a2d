"""The viewer's rendering core, without a browser.

A frame is rendered in two parts: the style-free part (marching the scene, its samples'
compositing weights and style features: `Frame`, kept for the last frame) and the decoder
(`compose`). Swapping the style re-runs only the second, and so does comparing two styles
side by side (one decode per half of the frame). Edits of a style add up: painting on the
feature plane makes a map (a base decoder's colours with painted discs over them) and fits
a new decoder to it in well under a second (`fit_painted`); recolouring a material picked
in the view blends the map toward a colour around the material's feature
(fastjoint.viewer.recolour), shown at once as an edit of the decoder's table and fitted
only when the style is saved. The last edit can be undone. The pixels whose style feature the
reference does not cover (fastjoint.coverage) can be tinted magenta over any style.
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

from fastjoint.coverage import CoverageTable, outline, reference_coverage, tint_uncovered, visible_uncovered
from fastjoint.data import Camera, image_rays
from fastjoint.errors import UserError
from fastjoint.metrics import psnr
from fastjoint.pairing import ORIGINAL, SCENES
from fastjoint.plane import PLANE_PIXELS, SurfaceSamples, plane_image, plane_points, scatter, surface_samples
from fastjoint.render import SampleCache, composite_cached
from fastjoint.render.baked import TABLE_PIXELS, DecoderTable, table_points
from fastjoint.run import Built, LoadedRun
from fastjoint.styles import StoredStyle, save_style, style_path
from fastjoint.viewer.recolour import Recolour, RecolouredDecoder, luminance, pick_input, recoloured

PAINTED = "painted"  # the name of the painted style until it is saved under another
FIT_PIXELS = 32  # side of the grid of feature-plane points a painted decoder is fitted on
FIT_STEPS = 300
FIT_LR = 5e-2
SAVE_STEPS = 4 * FIT_STEPS  # recolours are fitted only when saved, off the frame's path: longer, closer (README, `view`)
EDGE = 0.04  # width of a painted disc's soft edge, in feature units
NORMAL_ZEROS = 4  # a decoder that reads the normal is fitted and checked at no normal on every 4th plane point


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
def compose(
    frame: Frame, decoder: Callable[[Tensor], Tensor], right: Callable[[Tensor], Tensor] | None = None
) -> np.ndarray:  # [H, W, 3] uint8
    """The frame in a style: the decoder (or its lookup table) on the cached features, composited with the cached weights.

    With `right`, the frame split down the middle: its left half in `decoder`, its right half
    in `right` (each sample decoded once, by its half's decoder).
    """
    cache = frame.cache
    if right is None:
        colours = decoder(cache.features)
    else:
        left = cache.ray_indices % frame.camera.width < frame.camera.width // 2
        colours = torch.empty(cache.n_samples, 3, dtype=cache.features.dtype, device=cache.features.device)
        colours[left] = decoder(cache.features[left]).to(colours.dtype)
        colours[~left] = right(cache.features[~left]).to(colours.dtype)
    rgb = composite_cached(cache, colours, frame.background)
    image = rgb.reshape(frame.camera.height, frame.camera.width, 3).clamp(0.0, 1.0)
    return (image.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


class SharedCoverage:
    """The reference's coverage as a table over the feature plane, made once (on first use) for every browser of a run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made = False
        self.table: CoverageTable | None = None  # None once made: too little of the reference is seen

    def get(self, run: LoadedRun) -> CoverageTable | None:
        with self.lock:
            if not self.made:
                coverage = reference_coverage(run)
                self.table = None if coverage is None else coverage.table()
                self.made = True
            return self.table


# --- painting -----------------------------------------------------------------------


class Stroke(NamedTuple):
    """A disc painted on the feature plane."""

    centre: tuple[float, float]  # feature coordinates in [-1, 1]^2
    radius: float  # feature units
    colour: tuple[float, float, float]  # RGB in [0, 1]


Edit = Stroke | Recolour  # an edit of a style: a painted disc or a recoloured material


def painted_colours(
    base: nn.Module,
    strokes: Sequence[Edit],
    points: Tensor,  # [N, 2]
) -> Tensor:  # [N, 3]
    """The edited map at `points`: the base decoder's colours, each stroke's disc (soft edge) or recolour over them, in order."""
    with torch.no_grad():
        colours = base(points).clone()
    for stroke in strokes:
        if isinstance(stroke, Recolour):
            colours = recoloured(colours, points, [stroke])
            continue
        centre = torch.tensor(stroke.centre, dtype=points.dtype, device=points.device)
        distance = (points[:, : centre.shape[0]] - centre).norm(dim=-1)
        cover = ((stroke.radius - distance) / EDGE + 0.5).clamp(0.0, 1.0)[:, None]
        paint = torch.tensor(stroke.colour, dtype=colours.dtype, device=colours.device)
        colours = colours * (1.0 - cover) + paint * cover
    return colours


def with_normals(points: Tensor, inputs: int, generator: torch.Generator) -> Tensor:  # [N, 2] -> [N, inputs]
    """Feature-plane points as a decoder of `inputs` numbers reads them: with a random unit normal each where it
    reads the normal (every NORMAL_ZEROS-th point with none, as a faint sample reads it)."""
    extra = inputs - points.shape[1]
    if extra == 0:
        return points
    normals = nn.functional.normalize(torch.randn(points.shape[0], extra, generator=generator), dim=1)
    normals[::NORMAL_ZEROS] = 0.0
    return torch.cat([points, normals.to(device=points.device, dtype=points.dtype)], dim=1)


def fit_painted(
    new_decoder: nn.Module,
    base: nn.Module,
    strokes: Sequence[Edit],
    steps: int = FIT_STEPS,
    pixels: int = FIT_PIXELS,
    seed: int = 0,
    start: nn.Module | None = None,
) -> nn.Module:
    """`new_decoder` (a fresh decoder of the run's shape) fitted to the edited map of `base` (`painted_colours`).

    It starts from the base decoder's weights (or those of `start`, e.g. the fit of all but
    the last edits), so unedited regions need little change, and fits the map on a grid over
    [-1, 1]^2 (the whole plane: features the frame shows and those it does not), each point with a
    random normal where the decoder reads one (`with_normals`).
    """
    device = next(base.parameters()).device
    points = plane_points(pixels, device)
    new_decoder.load_state_dict((start or base).state_dict())
    new_decoder.to(device).train()
    optimizer = torch.optim.Adam(new_decoder.parameters(), lr=FIT_LR, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(seed)
    jitter = 1.0 / pixels  # between grid points too, so that edges are learnt, not memorised
    for step in range(steps):
        for group in optimizer.param_groups:  # decays to a tenth, for a clean finish
            group["lr"] = FIT_LR * 0.1 ** (step / steps)
        shifted = points + (torch.rand(points.shape, generator=generator).to(device) - 0.5) * jitter
        shifted = with_normals(shifted, new_decoder.inputs, generator)
        loss = torch.nn.functional.mse_loss(new_decoder(shifted), painted_colours(base, strokes, shifted))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    new_decoder.train(False)
    return new_decoder


class FitError(NamedTuple):
    """How far a fitted decoder is from the map it was fitted to, in 8-bit colour levels (0 to 255)."""

    mean: float  # mean absolute difference over the plane's table points and channels
    max: float  # the largest


@torch.no_grad()
def fit_error(decoder: nn.Module, target: Callable[[Tensor], Tensor], pixels: int = TABLE_PIXELS) -> FitError:
    """`decoder` against `target` at the points of a decoder table over [-1, 1]^2 (what the fast renderer reads),
    each with a random normal (a fixed draw) where the decoder reads one."""
    points = with_normals(table_points(pixels, next(decoder.parameters()).device), decoder.inputs, torch.Generator().manual_seed(0))
    difference = (decoder(points).clamp(0, 1) - target(points).clamp(0, 1)).abs() * 255.0
    return FitError(float(difference.mean()), float(difference.max()))


def frame_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 frames (inf when equal)."""
    return psnr(torch.from_numpy(a) / 255.0, torch.from_numpy(b) / 255.0)


def draw_strokes(image: np.ndarray, strokes: Sequence[Edit]) -> np.ndarray:
    """Outlines the painted discs and the recolours' falloff radii (dark and light dashes) on a feature-plane image [P, P, 3]."""
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
    """One browser's view of a run: scene, style, the last frame, the edits of a style, the comparison.

    Thread-safe: the viewer's callbacks and its render loop call it from several threads.

    Args:
        writable: False for a viewer that may not write to the run (`save_painted` refuses).
    """

    def __init__(
        self,
        run: LoadedRun,
        scene: str = "target",
        style: str | None = None,
        surfaces: dict[str, SurfaceSamples] | None = None,
        writable: bool = True,
        coverage: SharedCoverage | None = None,
    ) -> None:
        require_feature_plane(run)
        self.run = run
        self.built = run.built
        self.lock = threading.RLock()
        self.decoders: dict[str, nn.Module] = dict(self.built.model.decoders.items())
        self.scene = scene
        self.style = style or (run.pairings.transfers[0].style if run.pairings.transfers else ORIGINAL)
        self.base = self.style  # the style the edits start from
        self.edits: list[Edit] = []  # paint and recolours over `base`, in order; `PAINTED` shows them
        self.compare: str | None = None  # the style of the frame's right half; None: the whole frame in `style`
        self.writable = writable
        self.frame: Frame | None = None
        self.shown = (scene, self.style)  # the pairing of the last image composed
        self.shown_compare: str | None = None  # and the style of its right half
        self._fits: dict[tuple, nn.Module] = {}  # decoders fitted to the map of (base, edits ending with a paint)
        self._edited: tuple[DecoderTable, tuple[Recolour, ...], DecoderTable] | None = None  # the last recoloured table
        # Without tables (decoders that read the normal): the last decoder run on a frame's samples, the
        # samples' inputs and their colours, so that a recolour over it blends without decoding again.
        self._decoded: tuple[nn.Module, Tensor, Tensor] | None = None
        # The scenes' surface features for the scatter, by scene; shareable between cores.
        self._samples: dict[str, SurfaceSamples] = {} if surfaces is None else surfaces
        self.coverage = coverage or SharedCoverage()  # shareable between cores, as the surfaces are
        self.show_uncovered = False  # tint the pixels the reference does not cover
        self.uncovered_share: float | None = None  # of the last image's visible pixels, while shown

    @property
    def styles(self) -> list[str]:
        return list(self.decoders)

    @property
    def strokes(self) -> list[Stroke]:
        """The painted discs among the edits."""
        return [edit for edit in self.edits if isinstance(edit, Stroke)]

    @property
    def label(self) -> str:
        """What the last image shows, as the status line names it: scene:style, or scene:left|right when split."""
        scene, style = self.shown
        return f"{scene}:{style}" + (f"|{self.shown_compare}" if self.shown_compare else "")

    def render(self, pose: Tensor, camera: Camera) -> np.ndarray:
        """A new view: marches once, keeps the frame, composes it in the current style (and the compared one)."""
        with self.lock:
            scene = self.scene
        frame = render_frame(self.built, scene, pose, camera)  # the slow part, outside the lock
        with self.lock:
            self.frame = frame
            return self._compose(frame)

    def recompose(self) -> np.ndarray | None:
        """The last frame in the current style (no march, no grid query); None before any frame."""
        with self.lock:
            if self.frame is None:
                return None
            return self._compose(self.frame)

    def _compose(self, frame: Frame) -> np.ndarray:
        self.shown, self.shown_compare = (frame.scene, self.style), self.compare
        right = None if self.compare is None else self._decode(self.compare)
        image = compose(frame, self._decode(self.style), right)
        self.uncovered_share = None
        table = self.coverage.get(self.run) if self.show_uncovered else None
        if table is None:
            return image
        visible, uncovered, _ = visible_uncovered(frame.cache, table.covered, self.built.model.feature_dim)
        self.uncovered_share = float(uncovered.sum()) / int(visible.sum()) if visible.any() else 0.0
        return tint_uncovered(image, uncovered.reshape(frame.camera.height, frame.camera.width).cpu().numpy())

    def set_show_uncovered(self, show: bool) -> np.ndarray | None:
        """Tints (or stops tinting) the pixels the reference does not cover; returns the last frame recomposed.

        UserError when too little of the reference is seen to say what it covers.
        """
        if show and self.coverage.get(self.run) is None:
            raise UserError("too little of the reference is visible in its training views to say what it covers")
        with self.lock:
            self.show_uncovered = show
            return self.recompose()

    def _decode(self, style: str) -> Callable[[Tensor], Tensor]:
        """A style's decoder as the run renders it (a lookup table under the fast renderer).

        A recoloured style is its decoder's table with the recolours blended into it (a table
        edit), or under the exact renderer (and for decoders that read the normal, which have no
        table) the decoder with the blend on each sample's colour, the decoder run once per frame.
        """
        decoder = self.decoders[style]
        if not isinstance(decoder, RecolouredDecoder):
            return self.built.lookup(f"viewer:{style}", decoder)
        table = self.built.lookup(f"viewer:{style}:base", decoder.decoder)
        if not isinstance(table, DecoderTable):
            base, recolours = decoder.decoder, decoder.recolours
            return lambda inputs: recoloured(self._decoded_once(base, inputs), inputs, recolours)
        recolours = decoder.recolours
        if self._edited is None or self._edited[0] is not table or self._edited[1] != recolours:
            self._edited = (table, recolours, table.edited(lambda colours, points: recoloured(colours, points, recolours)))
        return self._edited[2]

    def _decoded_once(self, decoder: nn.Module, inputs: Tensor) -> Tensor:  # [S, decoder inputs] -> [S, 3]
        """`decoder(inputs)`, kept for the last `inputs` (a frame's samples): each recolour of a frame decodes it once."""
        kept = self._decoded
        if kept is None or kept[0] is not decoder or kept[1] is not inputs:
            kept = self._decoded = (decoder, inputs, decoder(inputs))
        return kept[2]

    def set_scene(self, scene: str) -> None:
        assert scene in SCENES, scene
        with self.lock:
            self.scene = scene

    def set_style(self, style: str) -> np.ndarray | None:
        """Swaps the decoder; returns the last frame recomposed in it."""
        with self.lock:
            self._check_style(style)
            self.style = style
            if style != PAINTED:
                self.base = style
            return self.recompose()

    def set_compare(self, style: str | None) -> np.ndarray | None:
        """Shows the frame's right half in `style` (None: the whole frame in the current style); returns the last frame recomposed."""
        with self.lock:
            if style is not None:
                self._check_style(style)
            self.compare = style
            return self.recompose()

    def _check_style(self, style: str) -> None:
        if style not in self.decoders:
            raise UserError(f"unknown style '{style}' (this run has {', '.join(self.decoders)})")

    # --- edits: paint and recolour --------------------------------------------------

    def paint(self, stroke: Stroke, steps: int = FIT_STEPS) -> np.ndarray | None:
        """Adds a stroke, fits the painted decoder, shows it; returns the last frame in it."""
        with self.lock:
            edits, base = [*self.edits, stroke], self.base
        self._fit(base, edits, steps)  # the slow part, outside the lock
        with self.lock:
            self.edits = edits
            self._show_edits()
            return self.recompose()

    def pick(self, origin: Sequence[float], direction: Sequence[float]) -> tuple[float, float] | None:
        """The feature of the material under a ray of the current scene (its first surface); None if it meets none."""
        picked = self._pick_input(origin, direction)
        return None if picked is None else (picked[0], picked[1])

    def _pick_input(self, origin: Sequence[float], direction: Sequence[float]) -> tuple[float, ...] | None:
        """What the decoders read under a ray of the current scene (`pick_input`: the feature, then the normal
        where they read it); None if it meets no surface."""
        with self.lock:
            scene = self.scene
        return pick_input(self.built, scene, origin, direction)

    def recolour(self, recolour: Recolour, replace_last: bool = False) -> np.ndarray | None:
        """Adds a recolour (or replaces the last edit, a recolour, with it) and shows it; returns the last frame in it."""
        with self.lock:
            edits = list(self.edits)
            if replace_last:
                if not edits or not isinstance(edits[-1], Recolour):
                    raise UserError("the last edit is not a recolour: click the scene to pick a material")
                edits.pop()
            self.edits = [*edits, recolour]
            self._show_edits()
            return self.recompose()

    def recolour_at(
        self,
        origin: Sequence[float],
        direction: Sequence[float],
        colour: tuple[float, float, float],
        radius: float,
        keep_shading: bool = False,
    ) -> np.ndarray | None:
        """Recolours the material under a ray (`pick`) with `colour`, falloff `radius`; returns the last frame in it."""
        picked = self._pick_input(origin, direction)
        if picked is None:
            raise UserError("nothing under the cursor: click on the scene to pick a material")
        with self.lock:  # the map the recolour goes over: the edits so far, or the base style
            decoder = self.decoders[PAINTED] if self.edits else self.decoders[self.base]
            with torch.no_grad():
                shade = float(luminance(decoder(torch.tensor([picked], device=self.built.device)))[0])
            return self.recolour(Recolour((picked[0], picked[1]), radius, colour, shade, keep_shading))

    def undo(self) -> np.ndarray | None:
        """Forgets the last edit (paint or recolour); returns the last frame without it (in the base style once none is left)."""
        with self.lock:
            if not self.edits:
                raise UserError("nothing to undo: no paint or recolour since the last Clear")
            self.edits = self.edits[:-1]
            self._show_edits()
            return self.recompose()

    def clear_paint(self) -> np.ndarray | None:
        """Forgets every edit and the painted style; back to the base style."""
        with self.lock:
            self.edits = []
            self._fits.clear()
            self._show_edits()
            return self.set_style(self.base)

    def _fit(self, base: str, edits: Sequence[Edit], steps: int = FIT_STEPS) -> nn.Module:
        """The decoder fitted to the map of `edits` (ending with a paint) over `base`; fitted once."""
        key = (base, tuple(edits))
        if key not in self._fits:
            self._fits[key] = fit_painted(self.built.model.new_decoder(), self.decoders[base], edits, steps)
        return self._fits[key]

    def _show_edits(self) -> None:
        """Makes `PAINTED` the edits over the base style and shows it (under the lock); without edits, the base style.

        Up to the last paint the edits are a fitted decoder; the recolours after it are blended over it.
        """
        if not self.edits:
            self.decoders.pop(PAINTED, None)
            self.style = self.base if self.style == PAINTED else self.style
            self.compare = None if self.compare == PAINTED else self.compare
            return
        painted = [i for i, edit in enumerate(self.edits) if isinstance(edit, Stroke)]
        last = painted[-1] if painted else -1
        decoder = self._fit(self.base, self.edits[: last + 1]) if painted else self.decoders[self.base]
        recolours = self.edits[last + 1 :]
        self.decoders[PAINTED] = RecolouredDecoder(decoder, recolours) if recolours else decoder
        self.style = PAINTED

    def save_painted(self, name: str, force: bool = False) -> Path:
        """Saves the edited style as the run's style `name` (RUN/styles/<name>.pt).

        Styles on disk are decoders: recolours are fitted into one first (`SAVE_STEPS`), and
        how far it lands from the edited table is kept in the style's info (`fit`).
        """
        with self.lock:
            if not self.writable:
                raise UserError("this viewer is read-only (served to a network without --allow-writes): styles cannot be saved")
            if PAINTED not in self.decoders:
                raise UserError("nothing painted yet: paint a region of the feature plane or recolour a material first")
            self._check_new_name(name, force)
            base, edits, shown, frame = self.base, list(self.edits), self.decoders[PAINTED], self.frame
            shown_table = self._decode(PAINTED)
        decoder = shown
        if isinstance(shown, RecolouredDecoder):  # the slow part, outside the lock
            decoder = fit_painted(self.built.model.new_decoder(), self.decoders[base], edits, SAVE_STEPS, start=shown.decoder)
        error = fit_error(decoder, shown)
        fit = {"mean_error": error.mean, "max_error": error.max}
        if frame is not None:
            fit["frame_psnr"] = frame_psnr(compose(frame, self.built.lookup("viewer:saving", decoder)), compose(frame, shown_table))
        with self.lock:
            self._check_new_name(name, force)
            info = {
                "base": base,
                "strokes": [list(s.centre) + [s.radius] + list(s.colour) for s in edits if isinstance(s, Stroke)],
                "edits": [
                    {"kind": "paint", "centre": list(e.centre), "radius": e.radius, "colour": list(e.colour)}
                    if isinstance(e, Stroke)
                    else {"kind": "recolour", **e._asdict(), "centre": list(e.centre), "colour": list(e.colour)}
                    for e in edits
                ],
                "fit": fit,
            }
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

    def _check_new_name(self, name: str, force: bool) -> None:
        self.run.check_new_style(name, force, key="style name")
        if name in self.decoders and not force:
            raise UserError(f"style name: '{name}' is already a style of this viewer")

    def surface(self, scene: str, views: int = 4) -> SurfaceSamples:
        """Features of a scene's visible surface points (a few training views; computed once)."""
        if scene not in self._samples:
            self._samples[scene] = surface_samples(self.run, scene, views)
        return self._samples[scene]

    def feature_plane(self, pixels: int = PLANE_PIXELS, with_scatter: bool = True) -> np.ndarray:
        """The current style's decoder over [-1, 1]^2, the scenes' features on it, the painted discs and recolours outlined
        (and, while uncovered pixels are shown, the region the reference covers)."""
        with self.lock:
            decoder, edits = self.decoders[self.style], list(self.edits)
        on_plane = self.built.model.on_plane  # a decoder that reads the normal is drawn at none
        image = plane_image(lambda points: decoder(on_plane(points)), pixels, self.built.device)
        if with_scatter:
            for scene in SCENES:
                if scene in self._samples:
                    image = blend_scatter(image, self._samples[scene])
        table = self.coverage.table if self.show_uncovered else None
        if table is not None:  # the covered region outlined
            image = outline(image, table.covered(plane_points(pixels)).reshape(pixels, pixels).numpy())
        return draw_strokes(image, edits)


def blend_scatter(image: np.ndarray, samples: SurfaceSamples, max_points: int = 1500) -> np.ndarray:
    """analyze.scatter's dots over the map, the map kept at full strength where no dot falls."""
    dots = scatter(image, samples, max_points)
    faded = scatter(image, SurfaceSamples(samples.features[:0], samples.colours[:0]), max_points)
    return np.where((dots != faded).any(-1, keepdims=True), dots, image)
