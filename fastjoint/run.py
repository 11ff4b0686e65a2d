"""What training, evaluation and rendering share: building the model for a config,
checkpoints (atomic writes), loading a finished run, and finding the datasets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from fastjoint.config import Config, DataConfig, load_config
from fastjoint.errors import UserError
from fastjoint.log import console
from fastjoint.model import JointModel
from fastjoint.ops import Backends, resolve_backends
from fastjoint.pairing import ALL, SCENES, Pairing
from fastjoint.render import Field, Sampler, make_estimators, occupancy_sampler, uniform_sampler

CHECKPOINT = Path("checkpoints") / "latest.pt"


class Built(NamedTuple):
    model: JointModel
    estimators: nn.ModuleDict  # scene -> OccGridEstimator (unused by the mlp baseline)
    samplers: dict[str, Sampler]  # scene -> where its rays are sampled
    backends: Backends
    device: torch.device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError('device = "cuda" but this torch sees no CUDA device (install a CUDA build of torch)')
    return torch.device(name)


def build(config: Config, device: torch.device) -> Built:
    """A fresh model and occupancy grids for `config`, on `device`."""
    backends = resolve_backends(config.backend, device)
    model = JointModel(config.model, config.data.aabb, grid_backend=backends.grid, mlp=config.mlp).to(device)
    estimators = make_estimators(SCENES, config.data.aabb, config.render).to(device)
    if config.model.encoder == "mlp":
        uniform = uniform_sampler(config.mlp.near, config.mlp.far, config.mlp.samples_per_ray)
        samplers = {scene: uniform for scene in SCENES}
    else:
        samplers = {scene: occupancy_sampler(estimators[scene], config.render, backends.march) for scene in SCENES}
    return Built(model, estimators, samplers, backends, device)


def pairing_field(model: JointModel, pairing: Pairing) -> Field:
    """The radiance field of one pairing, as the renderer takes it."""

    def field(points, dirs):
        result = model.query(pairing.scene, pairing.style, points, dirs)
        return result.sigma, result.rgb

    return field


# --- checkpoints --------------------------------------------------------------------


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Writes atomically: a kill at any moment leaves the previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated or foreign file raises many kinds of errors
        raise UserError(f"{path}: cannot read checkpoint ({type(error).__name__})") from None


class LoadedRun(NamedTuple):
    run_dir: Path
    config: Config
    built: Built
    step: int
    train_seconds: float


def load_run(run_dir: str | Path, device_name: str | None = None) -> LoadedRun:
    """The config and trained model of a run folder, from its latest checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    config = load_config(run_dir / "config.toml")
    device = resolve_device(device_name or config.device)
    built = build(config, device)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT, device)
    built.model.load_state_dict(checkpoint["model"])
    built.estimators.load_state_dict(checkpoint["estimators"])
    built.model.eval()
    built.estimators.eval()
    return LoadedRun(run_dir, config, built, int(checkpoint["step"]), float(checkpoint["train_seconds"]))


# --- datasets -----------------------------------------------------------------------


def dataset_path(data: DataConfig, pairing: Pairing) -> Path | None:
    """The dataset folder of a pairing, or None (only the transfer's ground truth may be absent)."""
    path = getattr(data, pairing.data_key)
    return Path(path) if path else None


def ensure_datasets(data: DataConfig) -> None:
    """Writes the scene kit's datasets when the config names a kit and a dataset is missing."""
    missing = [p for p in ALL if (path := dataset_path(data, p)) is not None and not path.is_dir()]
    if not missing or not data.kit:
        return
    from fastjoint.scenes import make_datasets

    with console.status(f"[bold]Writing the scene kit's '{data.kit}' datasets (once)...") as status:

        def progress(done: int, total: int) -> None:
            status.update(f"[bold]Writing the scene kit's '{data.kit}' datasets (once): {done}/{total} images")

        make_datasets(data.kit, progress=progress)
