"""What training, evaluation and rendering share: building a run's model for its config,
rendering a pairing, checkpoints, loading a finished run, and finding the datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from torch import Tensor, nn

from fastjoint.architecture import architecture, build_model
from fastjoint.config import Config, DataConfig, load_config
from fastjoint.data import Camera, image_rays
from fastjoint.errors import UserError
from fastjoint.files import atomic_write
from fastjoint.log import console
from fastjoint.model import JointModel
from fastjoint.ops import Backends, resolve_backends
from fastjoint.pairing import ORIGINAL, SCENES, Pairing
from fastjoint.render import Field, RenderResult, Sampler, make_estimators, render_rays
from fastjoint.render.background import LEARNED, RANDOM, Background, EnvironmentMap, from_json, resolve_background, to_json

CHECKPOINT = Path("checkpoints") / "latest.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError('device = "cuda" but this torch sees no CUDA device (install a CUDA build of torch)')
    return torch.device(name)


def resolve_backgrounds(config: Config, has_alpha: Mapping[Pairing, bool]) -> dict[Pairing, Background]:
    """Each trained pairing's background, `auto` decided by whether its images are RGBA."""
    data, render = config.data, config.render
    return {
        pairing: resolve_background(
            data.background(pairing), data.background_key(pairing), has_alpha[pairing], config.train.random_background, render.background
        )
        for pairing in data.pairings.trained
    }


class Built:
    """A run's model, occupancy grids and samplers on a device, and how to render its pairings.

    Args:
        config: the run's config.
        device: where the modules live.
        backgrounds: each trained pairing's resolved background (`resolve_backgrounds`);
            None: decided as if every dataset were RGBA (checkpoints from before learned
            backgrounds). A `learned` one gets an environment map in `environments`.
    """

    def __init__(self, config: Config, device: torch.device, backgrounds: Mapping[Pairing, Background] | None = None) -> None:
        self.config = config
        self.device = device
        self.backends: Backends = resolve_backends(config.backend, device)
        self.model: JointModel = build_model(config, self.backends.grid).to(device)
        self.estimators: nn.ModuleDict = make_estimators(SCENES, config.data.aabb, config.render).to(device)
        arch = architecture(config)
        self.samplers: dict[str, Sampler] = {
            scene: arch.sampler(self.estimators[scene], config, self.backends.march) for scene in SCENES
        }
        if backgrounds is None:
            backgrounds = resolve_backgrounds(config, dict.fromkeys(config.data.pairings.trained, True))
        self.backgrounds: dict[Pairing, Background] = dict(backgrounds)
        # Environment maps start at zero and draw no random numbers: a run without one repeats exactly.
        self.environments: nn.ModuleDict = nn.ModuleDict(
            {p.slug: EnvironmentMap() for p, choice in self.backgrounds.items() if choice == LEARNED}
        ).to(device)

    def background(self, pairing: Pairing) -> Background:
        """A pairing's resolved background; a transfer target:<style> has the target's (target:original)."""
        return self.backgrounds[Pairing(pairing.scene, ORIGINAL) if pairing.scene == "target" else pairing]

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
    def render_chunked(
        self, pairing: Pairing, rays_o: Tensor, rays_d: Tensor, background: Tensor | None = None
    ) -> RenderResult:
        """Any number of rays, `render.chunk` at a time, without gradients; on the pairing's backdrop by default."""
        chunk = self.config.render.chunk
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

    def render_image(self, pairing: Pairing, pose: Tensor, camera: Camera, background: Tensor | None = None) -> Tensor:
        """A whole view of a pairing [H, W, 3], on the CPU; on the pairing's backdrop by default (see `backdrop`)."""
        rays_o, rays_d = image_rays(pose.to(self.device), camera)
        background = None if background is None else background.to(self.device)
        rgb = self.render_chunked(pairing, rays_o, rays_d, background).rgb
        return rgb.reshape(camera.height, camera.width, 3).clamp(0.0, 1.0).cpu()

    def render(self, pairing: Pairing, poses: Tensor, camera: Camera, background: Tensor | None = None) -> list[Tensor]:
        """Views of a pairing from `poses` [n, 4, 4], [H, W, 3] each, on the CPU."""
        return [self.render_image(pairing, pose, camera, background) for pose in poses]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        self.estimators.train(mode)
        self.environments.train(mode)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "estimators": self.estimators.state_dict(),
            "backgrounds": {p.name: to_json(choice) for p, choice in self.backgrounds.items()},
            "environments": self.environments.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.estimators.load_state_dict(state["estimators"])
        self.environments.load_state_dict(state.get("environments", {}))


def saved_backgrounds(config: Config, state: dict[str, Any]) -> dict[Pairing, Background] | None:
    """The resolved backgrounds a checkpoint was trained with (None in older checkpoints)."""
    saved = state.get("backgrounds")
    trained = config.data.pairings.trained
    if saved is None or not all(p.name in saved for p in trained):
        return None
    return {p: from_json(saved[p.name]) for p in trained}


# --- checkpoints --------------------------------------------------------------------


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Writes atomically: a kill at any moment leaves the previous checkpoint whole."""
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated or foreign file raises many kinds of errors
        raise UserError(f"{path}: cannot read checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or not {"model", "estimators", "step"} <= set(state):
        raise UserError(f"{path}: not a fastjoint checkpoint")
    return state


class LoadedRun(NamedTuple):
    run_dir: Path
    config: Config
    built: Built
    step: int
    train_seconds: float

    def render(self, pairing: Pairing, poses: Tensor, camera: Camera, background: Tensor | None = None) -> list[Tensor]:
        """Views of a pairing from `poses`, [H, W, 3] each, on the CPU."""
        return self.built.render(pairing, poses, camera, background)


def load_run(run_dir: str | Path, device_name: str | None = None) -> LoadedRun:
    """The config and trained model of a run folder, from its latest checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir}: not a fastjoint run (no config.toml)")
    config = load_config(run_dir / "config.toml")
    device = resolve_device(device_name or config.device)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT, device)
    built = Built(config, device, saved_backgrounds(config, checkpoint))
    built.load_state_dict(checkpoint)
    built.train(False)
    return LoadedRun(run_dir, config, built, int(checkpoint["step"]), float(checkpoint["train_seconds"]))


# --- datasets -----------------------------------------------------------------------


def check_datasets(data: DataConfig, with_truth: bool = True) -> None:
    """Every dataset folder the config names exists (after the kit has written its own)."""
    pairings = data.pairings.trained + (data.pairings.transfers if with_truth else ())
    for pairing in pairings:
        path = data.dataset(pairing)
        if path is not None and not path.is_dir():
            raise UserError(f"{data.dataset_key(pairing)}: dataset folder not found: {path}")


def ensure_datasets(data: DataConfig) -> None:
    """Writes the scene kit's datasets when the config names a kit and a dataset is missing."""
    missing = [p for p in data.pairings.all if (path := data.dataset(p)) is not None and not path.is_dir()]
    if missing and data.kit:
        from fastjoint.scenes import make_datasets

        with console.status(f"[bold]Writing the scene kit's '{data.kit}' datasets (once)...") as status:

            def progress(done: int, total: int) -> None:
                status.update(f"[bold]Writing the scene kit's '{data.kit}' datasets (once): {done}/{total} images")

            make_datasets(data.kit, progress=progress)
    check_datasets(data)
