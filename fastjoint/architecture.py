"""The encoder choice in one object: its modules, parameter groups, schedule and sampler.

`model.encoder = "hashgrid"` is fastjoint's: a hash grid per scene, a feature head shared
by both scenes, nerfacc's occupancy grids, Adam as instant-ngp sets it and nerfacc's step
decay. `"mlp"` is the research code's, kept as a baseline: NeRF MLPs, uniform samples
between near and far, Adam at 5e-4 with exponential decay. Nothing outside this module
asks which encoder a run uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from nerfacc import OccGridEstimator
from torch import nn

from fastjoint.config import Config
from fastjoint.model import FeatureHead, HashGrid, HashGridEncoder, JointModel
from fastjoint.model.nerf_mlp import NerfEncoder
from fastjoint.ops import PURE_TORCH, Backends
from fastjoint.pairing import SCENES
from fastjoint.render import Sampler, occupancy_sampler, uniform_sampler
from fastjoint.render.extent import SceneExtent, default_extents, field_box


class Architecture(Protocol):
    """What an encoder choice decides."""

    uses_occupancy: bool
    """Whether training keeps the scenes' occupancy grids up to date (they steer the sampler)."""
    lr_key: str
    """The config key of the peak learning rate."""

    def encoders(self, config: Config, backends: Backends, extents: Mapping[str, SceneExtent]) -> dict[str, nn.Module]:
        """One encoder per scene (created in a fixed order: the seed decides their weights)."""

    def decoder_layers(self, config: Config) -> int:
        """Hidden layers of each style decoder."""

    def mlp_shapes(self, config: Config) -> dict[str, tuple[int, int]]:
        """Config key -> (hidden units, hidden layers) of each kind of network backend.mlp runs."""

    def optimizer(self, model: JointModel, config: Config) -> torch.optim.Optimizer:
        """The optimiser with its parameter groups."""

    def lr_factor(self, step: int, config: Config) -> float:
        """The learning rate at `step` as a fraction of the peak."""

    def sampler(self, estimator: OccGridEstimator, config: Config, march_backend: str, extent: SceneExtent) -> Sampler:
        """Where a scene's rays are sampled."""


class HashGridArchitecture:
    uses_occupancy = True
    lr_key = "train.lr"

    def encoders(self, config: Config, backends: Backends, extents: Mapping[str, SceneExtent]) -> dict[str, nn.Module]:
        """An unbounded scene's grid spans contracted space, where the box is its central half: its
        resolutions are doubled, so that the box keeps a bounded scene's detail (fastjoint.render.extent)."""
        model = config.model
        grids = {
            scene: HashGrid(
                model.grid_levels,
                model.grid_features_per_level,
                model.grid_log2_table_size,
                model.grid_base_resolution * (2 if extents[scene].unbounded else 1),
                model.per_level_scale,
                backend=backends.grid,
            )
            for scene in SCENES
        }
        n_grid = grids[SCENES[0]].n_output_dims
        shared = FeatureHead(n_grid, model, backends.mlp) if model.share_head else None
        return {
            scene: HashGridEncoder(
                grids[scene],
                shared or FeatureHead(n_grid, model, backends.mlp),
                torch.tensor(field_box(config.data.aabb, extents[scene]), dtype=torch.float32),
                contracted=extents[scene].unbounded,
            )
            for scene in SCENES
        }

    def decoder_layers(self, config: Config) -> int:
        return 1

    def mlp_shapes(self, config: Config) -> dict[str, tuple[int, int]]:
        return {"model.hidden": (config.model.hidden, 1), "model.decoder_hidden": (config.model.decoder_hidden, 1)}

    def optimizer(self, model: JointModel, config: Config) -> torch.optim.Optimizer:
        """instant-ngp's Adam: tiny epsilon, no weight decay on the hash tables."""
        tables = [m.table for m in model.modules() if isinstance(m, HashGrid)]
        ids = {id(p) for p in tables}
        networks = [p for p in model.parameters() if id(p) not in ids]
        return torch.optim.Adam(
            [
                {"params": tables, "weight_decay": 0.0},
                {"params": networks, "weight_decay": config.train.weight_decay},
            ],
            lr=config.train.lr,
            betas=(0.9, 0.99),
            eps=1e-15,
        )

    def lr_factor(self, step: int, config: Config) -> float:
        """Linear warm-up, then x0.33 at 50%, 75% and 90% of the steps (nerfacc's recipe)."""
        train = config.train
        warm = min(1.0, (step + 1) / train.lr_warmup_steps) if train.lr_warmup_steps else 1.0
        decays = sum(step >= int(train.steps * f) for f in (0.5, 0.75, 0.9))
        return warm * 0.33**decays

    def sampler(self, estimator: OccGridEstimator, config: Config, march_backend: str, extent: SceneExtent) -> Sampler:
        return occupancy_sampler(estimator, config.render.step_size, extent.cone_angle, march_backend, extent.near)


class MlpArchitecture:
    uses_occupancy = False
    lr_key = "mlp.lr"

    def encoders(self, config: Config, backends: Backends, extents: Mapping[str, SceneExtent]) -> dict[str, nn.Module]:
        aabb = config.data.aabb
        side = max(aabb[3] - aabb[0], aabb[4] - aabb[1], aabb[5] - aabb[2])
        return {scene: NerfEncoder(config.mlp, config.model.feature_dim, side) for scene in SCENES}

    def decoder_layers(self, config: Config) -> int:
        return config.mlp.decoder_layers

    def mlp_shapes(self, config: Config) -> dict[str, tuple[int, int]]:
        """Only the style decoders: the research code's NeRF MLPs stay PyTorch's."""
        return {"model.decoder_hidden": (config.model.decoder_hidden, config.mlp.decoder_layers)}

    def optimizer(self, model: JointModel, config: Config) -> torch.optim.Optimizer:
        """The research code's Adam."""
        return torch.optim.Adam(model.parameters(), lr=config.mlp.lr, betas=(0.9, 0.999))

    def lr_factor(self, step: int, config: Config) -> float:
        """Tenfold decay every mlp.lr_decay_steps (the research code's)."""
        return 0.1 ** (step / config.mlp.lr_decay_steps)

    def sampler(self, estimator: OccGridEstimator, config: Config, march_backend: str, extent: SceneExtent) -> Sampler:
        return uniform_sampler(config.mlp.near, config.mlp.far, config.mlp.samples_per_ray)


ARCHITECTURES: dict[str, Architecture] = {"hashgrid": HashGridArchitecture(), "mlp": MlpArchitecture()}


def architecture(config: Config) -> Architecture:
    """The architecture `config.model.encoder` names."""
    return ARCHITECTURES[config.model.encoder]


def build_model(config: Config, backends: Backends = PURE_TORCH, extents: Mapping[str, SceneExtent] | None = None) -> JointModel:
    """A freshly initialised JointModel for `config`: its scenes' encoders, a decoder per style.

    `backends` are resolved ones (fastjoint.ops.resolve_backends); the grid's and the MLPs' are used.
    `extents`: each scene's (fastjoint.render.extent); None: bounded, as the config says.
    """
    arch = architecture(config)
    return JointModel(
        encoders=arch.encoders(config, backends, extents or default_extents(config)),
        styles=config.data.pairings.styles,
        feature_dim=config.model.feature_dim,
        decoder_hidden=config.model.decoder_hidden,
        decoder_layers=arch.decoder_layers(config),
        desired_shape_features=config.train.desired_shape_features,
        mlp_backend=backends.mlp,
        decoder_normal=config.model.decoder_normal,
    )
