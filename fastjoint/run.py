"""What training, evaluation and rendering share: building a run's model for its config,
rendering a pairing, and loading a finished run (its checkpoints: fastjoint.checkpoints).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from fastjoint.architecture import architecture, build_model
from fastjoint.checkpoints import first_line, load_latest
from fastjoint.colours import LEARNED, RANDOM, Background, from_json, resolve_background, to_json
from fastjoint.config import Config, load_config
from fastjoint.data import Camera, image_rays
from fastjoint.errors import UserError
from fastjoint.log import progress_bar
from fastjoint.model import JointModel
from fastjoint.ops import Backends, resolve_backends
from fastjoint.ops._torch_impl import _ray_aabb
from fastjoint.ops.backends import resolve_native
from fastjoint.ops.baked import MAX_CHANNELS, BakedMarch
from fastjoint.pairing import ORIGINAL, SCENES, Pairing, Pairings, check_style_name
from fastjoint.render import Field, RenderResult, SampleCache, Sampler, cache_samples, concat_caches, make_estimators, render_rays
from fastjoint.render.background import EnvironmentMap
from fastjoint.render.baked import BakedScene, DecoderTable, as_cache, bake_scene, sub_cells
from fastjoint.render.cached import composite_cached
from fastjoint.render.extent import SceneExtent, default_extents, ray_near, saved_extents
from fastjoint.styles import StoredStyle, run_styles, stored_styles, style_path

RENDERERS = ("fast", "exact")
"""How views are rendered: `exact` runs the hash grid and the feature head at every sample;
`fast` reads the scene baked into bricks, each style as a lookup table (fastjoint.render.baked)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError('device = "cuda" but this torch sees no CUDA device (install a CUDA build of torch)')
    return torch.device(name)


def resolve_backgrounds(config: Config, transparent: Mapping[Pairing, bool]) -> dict[Pairing, Background]:
    """Each trained pairing's background, `auto` decided by whether its images have transparency."""
    data, render = config.data, config.render
    return {
        pairing: resolve_background(
            data.background(pairing), data.background_key(pairing), transparent[pairing], config.train.random_background, render.background
        )
        for pairing in data.pairings.trained
    }


def bakes_view_dependent(extent: SceneExtent) -> bool:
    """Whether the fast renderer bakes a scene view-dependent (fastjoint.render.baked): an unbounded
    scene, a real capture, whose feature depends on the view far more than the kit's (the fox: 5.7 dB
    lost to the averaged bake, against 0.07 to 0.67 dB on the demo, where the averaged bake is about 2
    times faster; benchmarks/README.md, "The fast renderer against the exact one")."""
    return extent.unbounded


class Built:
    """A run's model, occupancy grids and samplers on a device, and how to render its pairings.

    Args:
        config: the run's config.
        device: where the modules live.
        backgrounds: each trained pairing's resolved background (`resolve_backgrounds`);
            None: decided as if every dataset were RGBA (checkpoints from before learned
            backgrounds). A `learned` one gets an environment map in `environments`.
        extents: each scene's (fastjoint.render.extent.resolve_extents); None: bounded, as the
            config says (checkpoints from before unbounded scenes).
    """

    def __init__(
        self,
        config: Config,
        device: torch.device,
        backgrounds: Mapping[Pairing, Background] | None = None,
        extents: Mapping[str, SceneExtent] | None = None,
    ) -> None:
        self.config = config
        self.device = device
        arch = architecture(config)
        self.extents: dict[str, SceneExtent] = dict(extents or default_extents(config))
        self.backends: Backends = resolve_backends(config.backend, device, arch.mlp_shapes(config))
        self.model: JointModel = build_model(config, self.backends, self.extents).to(device)
        levels = {scene: self.extents[scene].levels for scene in SCENES}
        self.estimators: nn.ModuleDict = make_estimators(levels, config.data.aabb, config.render).to(device)
        self.samplers: dict[str, Sampler] = {
            scene: arch.sampler(self.estimators[scene], config, self.backends.march, self.extents[scene]) for scene in SCENES
        }
        if backgrounds is None:
            backgrounds = resolve_backgrounds(config, dict.fromkeys(config.data.pairings.trained, True))
        self.backgrounds: dict[Pairing, Background] = dict(backgrounds)
        # Environment maps start at zero and draw no random numbers: a run without one repeats exactly.
        self.environments: nn.ModuleDict = nn.ModuleDict(
            {p.slug: EnvironmentMap() for p, choice in self.backgrounds.items() if choice == LEARNED}
        ).to(device)
        self.renderer = "exact"  # see RENDERERS; `use_renderer` changes it
        self.baked: dict[str, BakedScene] = {}
        self._tables: dict[str, tuple[nn.Module, DecoderTable]] = {}
        self._baked_backend = "torch"

    def use_renderer(self, renderer: str, progress: Callable[[int, int], None] | None = None, view_dependent: bool | None = None) -> None:
        """Renders with `renderer` from now on (see RENDERERS); `fast` bakes both scenes first.

        Baking evaluates the trained model once, so it is done again after any further training.
        `progress(done, total)` follows the bake. `view_dependent`: how each scene is baked
        (fastjoint.render.baked); None, by the scene's extent (`bakes_view_dependent`). UserError
        where the run cannot be baked.
        """
        assert renderer in RENDERERS, renderer
        if renderer == "fast":
            arch = architecture(self.config)
            if not arch.uses_occupancy:
                raise UserError(
                    f'--renderer fast: needs model.encoder = "hashgrid" (this run: "{self.config.model.encoder}"); use --renderer exact'
                )
            views = {scene: bakes_view_dependent(self.extents[scene]) if view_dependent is None else view_dependent for scene in SCENES}
            normal = 3 if self.model.decoder_normal else 0
            if any(views.values()) and 1 + self.config.model.geometry_features + normal > MAX_CHANNELS:
                raise UserError(
                    f"--renderer fast: needs model.geometry_features at most {MAX_CHANNELS - 1 - normal} for an unbounded scene "
                    f"(this run: {self.config.model.geometry_features}); use --renderer exact"
                )
            self._baked_backend = resolve_native("--renderer fast", self.device)
            render, model = self.config.render, self.config.model
            sub = sub_cells(model.grid_max_resolution, render.occ_resolution)
            total = sum(int(self.estimators[scene].binaries.sum()) for scene in SCENES)
            done = 0

            def scene_progress(cells: int, _: int) -> None:
                if progress is not None:
                    progress(done + cells, total)

            for scene in SCENES:
                estimator = self.estimators[scene]
                values = functools.partial(
                    self.model.encoders[scene].baked_values, view_dependent=views[scene], normals=self.model.decoder_normal
                )
                self.baked[scene] = bake_scene(
                    values, estimator.binaries, estimator.aabbs, render.step_size, sub, scene_progress, views[scene]
                )
                done += int(estimator.binaries.sum())
            self._tables.clear()
        self.renderer = renderer

    def decoder(self, style: str) -> Callable[[Tensor], Tensor]:
        """What turns a style's decoder inputs into colour: its decoder, or under `fast` its lookup table."""
        decoder = self.model.decoders[style]
        return self.lookup(style, decoder)

    def lookup(self, key: str, decoder: nn.Module) -> Callable[[Tensor], Tensor]:
        """`decoder` under the current renderer: itself, or under `fast` its lookup table (kept under `key`
        until the decoder under that key changes). A decoder that reads the normal has no table: it runs on
        each sample."""
        if self.renderer != "fast" or self.model.feature_dim != 2 or self.model.decoder_normal:
            return decoder
        kept = self._tables.get(key)
        if kept is None or kept[0] is not decoder:
            kept = (decoder, DecoderTable(decoder, self.device))
            self._tables[key] = kept
        return kept[1]

    def background(self, pairing: Pairing) -> Background:
        """A pairing's resolved background; a transfer target:<style> has the target's (target:original).

        A style added after training (restyle, painting) has no dataset of its own here: `random`,
        shown on render.background.
        """
        return self.backgrounds.get(Pairing(pairing.scene, ORIGINAL) if pairing.scene == "target" else pairing, RANDOM)

    def environment(self, pairing: Pairing) -> EnvironmentMap | None:
        """The environment map behind a pairing, when its background is learned."""
        if self.background(pairing) != LEARNED:
            return None
        return self.environments[Pairing(pairing.scene, ORIGINAL).slug if pairing.scene == "target" else pairing.slug]

    def backdrop_colour(self, pairing: Pairing) -> Tensor | None:  # [3]
        """The colour renders show behind a pairing (render.background for a random one); None when learned."""
        choice = self.background(pairing)
        if choice == LEARNED:
            return None
        return torch.tensor(self.config.render.background if choice == RANDOM else choice, device=self.device)

    def backdrop(self, pairing: Pairing, rays_d: Tensor) -> Tensor:  # [n_rays, 3] unit -> [n_rays, 3] or [3]
        """What renders show behind a pairing: its environment map, or its colour (`backdrop_colour`)."""
        environment = self.environment(pairing)
        return self.backdrop_colour(pairing) if environment is None else environment(rays_d)

    def backdrop_image(self, pairing: Pairing, pose: Tensor, camera: Camera) -> Tensor:  # [H, W, 3] on the CPU
        """The backdrop behind a whole view of a pairing."""
        _, rays_d = image_rays(pose.to(self.device), camera)
        with torch.no_grad():
            colours = self.backdrop(pairing, rays_d).expand(rays_d.shape[0], 3)
        return colours.reshape(camera.height, camera.width, 3).cpu()

    def field(self, pairing: Pairing) -> Field:
        """The radiance field of one pairing, as the renderer takes it."""

        def field(points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
            result = self.model.query(pairing.scene, pairing.style, points, dirs)
            return result.sigma, result.rgb

        return field

    def render_rays(
        self,
        pairing: Pairing,
        rays_o: Tensor,  # [n_rays, 3]
        rays_d: Tensor,  # [n_rays, 3]
        background: Tensor,  # [n_rays, 3] or [3]
        offsets: Tensor | None = None,  # [n_rays] stratification, training only
    ) -> RenderResult:
        """One batch of rays of a pairing (differentiable; the caller chooses the grad mode)."""
        sampler = self.samplers[pairing.scene]
        return render_rays(self.field(pairing), sampler, rays_o, rays_d, background, self.backends.composite, offsets)

    @torch.no_grad()
    def render_chunked(self, pairing: Pairing, rays_o: Tensor, rays_d: Tensor, background: Tensor | None = None) -> RenderResult:
        """Any number of rays, `render.chunk` at a time, without gradients; on the pairing's backdrop by default."""
        chunk = self.config.render.chunk
        if self.renderer == "fast":
            return self._render_fast(pairing, rays_o, rays_d, background)
        parts = [
            self.render_rays(pairing, o, d, self.backdrop(pairing, d) if background is None else background)
            for o, d in zip(rays_o.split(chunk), rays_d.split(chunk), strict=True)
        ]
        return RenderResult(
            torch.cat([p.rgb for p in parts]),
            torch.cat([p.opacity for p in parts]),
            torch.cat([p.depth for p in parts]),
            sum(p.n_samples for p in parts),
        )

    def _render_fast(self, pairing: Pairing, rays_o: Tensor, rays_d: Tensor, background: Tensor | None) -> RenderResult:
        """`render_chunked` through the baked scene and the style's lookup table."""
        out, near = self._baked_march(pairing.scene, rays_o, rays_d)
        cache = as_cache(out)
        behind = self.backdrop(pairing, rays_d) if background is None else background
        rgb = composite_cached(cache, self.decoder(pairing.style)(cache.features), behind)
        return RenderResult(rgb, out.opacity, out.depth + near * out.opacity, cache.n_samples)

    def _baked_march(self, scene: str, rays_o: Tensor, rays_d: Tensor) -> tuple[BakedMarch, Tensor]:
        """The baked scene's kept samples of these rays with their style features (a view-dependent
        bake's geometry features through the feature network, each along its ray), and how far each
        ray's origin moved to where it starts (`_from_near`)."""
        starts, near = self._from_near(scene, rays_o, rays_d)
        baked = self.baked[scene]
        out = baked.march(starts, rays_d, self._baked_backend)
        if baked.view_dependent:
            geometry = self.config.model.geometry_features
            with torch.no_grad():
                feature = self.model.encoders[scene].baked_feature(out.features[:, :geometry], rays_d, out.ray_indices)
            out = out._replace(features=torch.cat([feature, out.features[:, geometry:]], dim=1))
        return out, near

    def _from_near(self, scene: str, rays_o: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor]:
        """The rays' origins moved up to where the scene's rays start (`ray_near`; the baked march has no near
        plane of its own) and how far each moved, [n_rays]."""
        extent = self.extents[scene]
        if extent.near == 0:
            return rays_o, torch.zeros(rays_o.shape[0], device=rays_o.device)
        near = ray_near(rays_o, extent.near, self.estimators[scene].aabbs[0])
        return rays_o + rays_d * near[:, None], near

    def render_image(self, pairing: Pairing, pose: Tensor, camera: Camera, background: Tensor | None = None) -> Tensor:
        """A whole view of a pairing [H, W, 3], on the CPU; on the pairing's backdrop by default (see `backdrop`)."""
        rays_o, rays_d = image_rays(pose.to(self.device), camera)
        background = None if background is None else background.to(self.device)
        rgb = self.render_chunked(pairing, rays_o, rays_d, background).rgb
        return rgb.reshape(camera.height, camera.width, 3).clamp(0.0, 1.0).cpu()

    def render(self, pairing: Pairing, poses: Tensor, camera: Camera, background: Tensor | None = None) -> list[Tensor]:
        """Views of a pairing from `poses` [n, 4, 4], [H, W, 3] each, on the CPU."""
        return [self.render_image(pairing, pose, camera, background) for pose in poses]

    def set_decoder(self, style: str, state: dict[str, Tensor]) -> None:
        """Adds (or replaces) the decoder of `style`, from a decoder's state_dict."""
        decoder = self.model.new_decoder().to(self.device)
        decoder.load_state_dict(state)
        decoder.train(self.model.training)
        self.model.decoders[style] = decoder

    @torch.no_grad()
    def cache_samples(self, scene: str, rays_o: Tensor, rays_d: Tensor) -> SampleCache:
        """The style-free part of rendering these rays of a scene, `render.chunk` rays at a time.

        With a one-level occupancy grid and uniform steps, rays that miss every occupied cell are
        not marched, and the others start where they enter the occupied cells' box, moved by whole
        steps so that their samples are the ones `render_rays` takes (samples are anchored at the
        origin).
        Under the fast renderer, the baked scene's samples instead.
        """
        if self.renderer == "fast":
            return as_cache(self._baked_march(scene, rays_o, rays_d)[0])
        chunk = self.config.render.chunk

        def field(points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
            return self.model.features(scene, points, dirs)

        def inputs(points: Tensor, sigma: Tensor, feature: Tensor) -> Tensor:
            return self.model.decoder_input(scene, points, sigma, feature)

        n_rays = rays_o.shape[0]
        rays = torch.arange(n_rays, device=rays_o.device)
        extent = self.extents[scene]
        if architecture(self.config).uses_occupancy and extent.levels == 1 and extent.cone_angle == 0 and extent.near == 0:
            rays, rays_o = self._skip_to_occupied(scene, rays_o, rays_d)
            rays_d = rays_d[rays]
        sampler = self.samplers[scene]
        parts = [cache_samples(field, sampler, o, d, inputs=inputs) for o, d in zip(rays_o.split(chunk), rays_d.split(chunk), strict=True)]
        marched = concat_caches(parts) if parts else None
        opacity = torch.zeros(n_rays, device=rays_o.device)
        if marched is None:
            return SampleCache(rays[:0], opacity[:0], torch.zeros(0, self.model.decoder_inputs, device=rays_o.device), opacity, n_rays)
        opacity[rays] = marched.opacity
        return SampleCache(rays[marched.ray_indices], marched.weights, marched.features, opacity, n_rays)

    def _skip_to_occupied(self, scene: str, rays_o: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor]:
        """The rays that cross the box of a scene's occupied cells ([k] int64), their origins moved up to it."""
        estimator = self.estimators[scene]
        occupied = estimator.binaries[0].nonzero()
        if occupied.shape[0] == 0:
            return torch.arange(0, device=rays_o.device), rays_o[:0]
        box, resolution = estimator.aabbs[0], torch.tensor(estimator.binaries.shape[1:], device=rays_o.device)
        size = (box[3:] - box[:3]) / resolution
        tight = torch.cat([box[:3] + occupied.amin(0) * size, box[:3] + (occupied.amax(0) + 1) * size])
        t_min, _, hit = _ray_aabb(rays_o, rays_d, tight)
        rays = hit.nonzero()[:, 0]
        step = self.config.render.step_size
        # Whole steps short of the entry (one step of margin): the march keeps its sample grid.
        t0 = ((t_min[rays].clamp(min=0.0) / step).floor() - 1.0).clamp(min=0.0) * step
        return rays, rays_o[rays] + rays_d[rays] * t0[:, None]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        self.estimators.train(mode)
        self.environments.train(mode)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "estimators": self.estimators.state_dict(),
            "backgrounds": {p.name: to_json(choice) for p, choice in self.backgrounds.items()},
            "extents": {scene: extent.to_json() for scene, extent in self.extents.items()},
            "environments": self.environments.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], source: Path | str = "checkpoint") -> None:
        """Loads a checkpoint's model, occupancy grids and learned backgrounds; UserError (naming `source`) if they do not fit."""
        try:
            self.model.load_state_dict(state["model"])
            self.estimators.load_state_dict(state["estimators"])
            self.environments.load_state_dict(state.get("environments", {}))
        except (RuntimeError, KeyError, TypeError, AttributeError) as error:
            raise UserError(f"{source}: does not fit this run's model ({first_line(error)})") from None


def saved_backgrounds(config: Config, state: dict[str, Any]) -> dict[Pairing, Background] | None:
    """The resolved backgrounds a checkpoint was trained with (None in older checkpoints)."""
    saved = state.get("backgrounds")
    trained = config.data.pairings.trained
    if not isinstance(saved, dict) or not all(p.name in saved for p in trained):
        return None
    return {p: from_json(saved[p.name]) for p in trained}


class LoadedRun(NamedTuple):
    """A trained run with its stored styles: `config` and `pairings` include them (see styles.py)."""

    run_dir: Path
    config: Config
    built: Built
    step: int
    train_seconds: float
    pairings: Pairings
    stored: dict[str, StoredStyle]

    def dataset(self, pairing: Pairing) -> Path | None:
        """The dataset folder of a pairing; None for a transfer without ground truth or a painted style."""
        if pairing.style in self.pairings.painted:
            return None
        return self.config.data.dataset(pairing)

    def render(self, pairing: Pairing, poses: Tensor, camera: Camera, background: Tensor | None = None) -> list[Tensor]:
        """Views of a pairing from `poses`, [H, W, 3] each, on the CPU."""
        return self.built.render(pairing, poses, camera, background)

    def check_new_style(self, name: str, force: bool, key: str = "STYLE") -> None:
        """A new style's name is a style name the run does not have yet (unless `force`); UserError naming `key`."""
        check_style_name(name, key)
        if name in self.pairings.styles and not force:
            where = "a stored style, " + str(style_path(self.run_dir, name)) if name in self.stored else "a style of its config"
            raise UserError(f"{key}: '{name}' is already a style of {self.run_dir} ({where}); pass --force to replace it")

    def with_style(self, style: StoredStyle) -> LoadedRun:
        """The run with one more stored style (its decoder set on the run's model)."""
        stored = {**self.stored, style.name: style}
        config, pairings = run_styles(self.config, stored)
        self.built.set_decoder(style.name, style.decoder)
        self.built.config = config
        return self._replace(config=config, pairings=pairings, stored=stored)


def load_run(run_dir: str | Path, device_name: str | None = None) -> LoadedRun:
    """The config and trained model of a run folder, from its latest checkpoint, with its stored styles."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir}: not a fastjoint run (no config.toml)")
    trained = load_config(run_dir / "config.toml", saved=True)
    stored = stored_styles(run_dir)
    config, pairings = run_styles(trained, stored)
    device = resolve_device(device_name or trained.device)
    loaded: list[Built] = []

    def apply(state: dict[str, Any], path: Path) -> None:
        # The backgrounds and extents a run trained with are in its checkpoint, and shape its modules.
        built = Built(trained, device, saved_backgrounds(trained, state), saved_extents(state))
        built.load_state_dict(state, path)
        loaded.append(built)

    checkpoint, _ = load_latest(run_dir, device, apply)
    built = loaded[-1]
    for name, style in stored.items():
        try:
            built.set_decoder(name, style.decoder)
        except (RuntimeError, KeyError):
            raise UserError(f"{style_path(run_dir, name)}: its decoder does not fit this run's model") from None
    built.config = config
    built.train(False)
    return LoadedRun(run_dir, config, built, int(checkpoint["step"]), float(checkpoint["train_seconds"]), pairings, stored)


def use_renderer(run: LoadedRun, renderer: str) -> None:
    """Makes a loaded run render with `renderer` (RENDERERS); `fast` bakes its scenes behind a progress bar."""
    if renderer == "exact":
        run.built.use_renderer(renderer)
        return
    with progress_bar("baking the scenes for the fast renderer") as progress:
        run.built.use_renderer(renderer, progress)
