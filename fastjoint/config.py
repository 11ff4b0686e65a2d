"""The configuration schema: frozen dataclasses, TOML files and command-line overrides.

Every field carries a docstring below it; tyro turns them into `--help`. A config is read
from a TOML file (unknown keys and wrong types are one-line errors naming the key, by the
validator of `schema.py`), then overridden from the command line, then frozen. A section
refuses keys that no longer exist with its own message: its `__refused__` (key -> why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from fastjoint.colours import parse_background
from fastjoint.errors import UserError
from fastjoint.pairing import ORIGINAL, Pairing, Pairings, check_style_name
from fastjoint.schema import coerce, describe, from_dict, read_toml, to_dict, to_toml

__all__ = [  # the schema's reading and writing are re-exported: config.from_dict etc. keep working
    "BackendConfig",
    "Config",
    "DataConfig",
    "MlpConfig",
    "ModelConfig",
    "RETIRED_AT",
    "RETIRED_OPTIONS",
    "RenderConfig",
    "StyleData",
    "TrainConfig",
    "changed_keys",
    "checked",
    "coerce",
    "describe",
    "from_dict",
    "load_config",
    "retired_message",
    "to_dict",
    "to_toml",
]

Box = tuple[float, float, float, float, float, float]
Colour = tuple[float, float, float]


@dataclass(frozen=True)
class StyleData:
    """A desired style: the reference photographed in it, and optionally the transfer's ground truth."""

    reference: str
    """The reference scene's dataset in this style (trained as `reference:<style>`)."""
    target: str = ""
    """Ground truth of the transfer `target:<style>`, for evaluation only; "" when there is none."""
    reference_background: str = "auto"
    """Background of the reference in this style: "auto", "random", "learned", "white", "black" or "#rrggbb" (see data.target_background)."""


_OLD_DATA_KEYS = ("target_original", "reference_original", "reference_desired", "target_desired")
_NEW_DATA_FORM = (
    'the [data] section now reads target = "...", reference = "..." and one [data.styles.<name>] table '
    'per desired style with reference = "..." (and target = "..." for ground truth); see configs/demo.toml'
)

COVER_FRACTION = 6  # train.cover_until_step = "auto": the cover term trains the first 1/6 of the steps

_RETIRED = {  # key: (the value that meant off, the last commit with its code)
    "train.align": ("off", "233ffe5"),
    "train.align_weight": (0.05, "233ffe5"),
    "train.align_warmup_steps": (250, "233ffe5"),
    "model.decoder_position": (0, "233ffe5"),
    "model.decoder_position_original": (True, "233ffe5"),
    "model.pattern_field": (0, "233ffe5"),
    "model.pattern_cycles": (4.0, "233ffe5"),
    "train.desired_gradient": (1.0, "ed5469e"),
    "train.desired_through": ("all", "06e74eb"),
    "train.desired_from_step": (0, "06e74eb"),
    "train.desired_until_step": (0, "06e74eb"),
    "train.cover_through": ("all", "06e74eb"),
    "train.cover_margin": (0.0, "06e74eb"),
    "train.appearance": (False, "baaef49"),
    "train.distortion_weight": (0.0, "6e09a70"),
    "train.near_gradient_distance": (0.0, "6e09a70"),
    "train.refine_poses": ("none", "c312308"),
    "train.pose_lr": (1e-3, "c312308"),
    "train.cover_decay": (False, "82a40a0"),
    "train.match_weight": (0.0, "ed5469e"),
    "train.match_metric": (0.0, "ed5469e"),
}
RETIRED_OPTIONS = {key: off for key, (off, _) in _RETIRED.items()}
"""Options that were measured, lost and left the code, with the value that meant off (which the
config.toml of a run trained before their retirement holds)."""
RETIRED_AT = {key: commit for key, (_, commit) in _RETIRED.items()}
"""The last commit with each retired option's code."""
_RETIRED_WHERE = {
    "233ffe5": "Retired options",
    "06e74eb": "A transfer that does not depend on the seed",
    "baaef49": "A real capture: instant-ngp's fox",
    "6e09a70": "Floaters on the fox",
    "c312308": "Pose refinement in training",
    "82a40a0": "A transfer that does not depend on the seed",
    "ed5469e": "The match term, a reduced gradient, and whole-run ensembles",
}


def retired_message(key: str) -> str:
    """The one line that refuses a retired option (as the schema's `__refused__` words it)."""
    return f"'{key}': {_retired_why(key)}"


def _retired_why(key: str) -> str:
    commit = RETIRED_AT[key]
    return (
        f'retired: measured, it lost (results in benchmarks/README.md, "{_RETIRED_WHERE[commit]}"; '
        f"the code is at commit {commit}); remove the key"
    )


def _retired(section: str) -> dict[str, str]:
    """A section's `__refused__` entries for its retired options."""
    return {key.split(".")[1]: _retired_why(key) for key in RETIRED_OPTIONS if key.startswith(section + ".")}


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the datasets of an analogy live: each scene in its original style, and each desired style.

    Every path is a dataset folder (Blender format). There are no defaults: a config names
    its own data (configs/demo.toml names the scene kit's demo).
    """

    __refused__: ClassVar[dict[str, str]] = dict.fromkeys(_OLD_DATA_KEYS, _NEW_DATA_FORM)

    kit: str = ""
    """Scene-kit recipe (a name for data/<kit>.toml, or a .toml path) that writes the datasets below when they are missing; "" for none."""
    target: str
    """The target scene in its original style (trained as `target:original`)."""
    reference: str
    """The reference scene in its original style (trained as `reference:original`)."""
    target_background: str = "auto"
    """Background of the target's dataset, composited behind the scene: "auto" ("learned" for opaque images,
    "random" for images with transparency: RGBA whose alpha is below 255 somewhere), "random" (a random colour per training ray; renders on render.background), "learned"
    (an environment map of the ray direction, trained with the pairing: skies, rooms), or a colour "white",
    "black", "#rrggbb". The transfers target:<style> are rendered on it too (a random one: on render.background)."""
    reference_background: str = "auto"
    """Background of the reference's dataset in its original style (as data.target_background)."""
    styles: dict[str, StyleData] = field(default_factory=dict)
    """The desired styles, one `[data.styles.<name>]` table each; every style trains `reference:<name>` and transfers as `target:<name>`."""
    downscale: int = 1
    """Integer factor by which images are shrunk when loaded (every dataset, unless its scene's own below)."""
    target_downscale: int = 0
    """The factor for the target's datasets (its original style and the styles' ground truth); 0: data.downscale."""
    reference_downscale: int = 0
    """The factor for the reference's datasets (its original style, every desired style, restyle's photos); 0: data.downscale."""
    aabb: Box = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
    """Scene box (xmin ymin zmin xmax ymax zmax) in world units, shared by both scenes."""
    unbounded: Literal["auto", "none", "target", "reference", "both"] = "auto"
    """Which scenes reach beyond data.aabb (a room or landscape around the object, fastjoint.render.extent):
    their hash grid spans all of space, contracted outside the box, and their occupancy grid grows to
    render.occ_levels levels with steps that lengthen with distance (render.cone_angle); auto: a scene whose
    photos are an opaque capture in nerfstudio or COLMAP format whose instant-ngp aabb_scale reaches past
    data.aabb (a real capture that says it holds a room), not synthetic Blender scenes, images with
    transparency, nor captures that declare no extent (name them here to make them unbounded)."""

    def __post_init__(self) -> None:
        _check(bool(self.target), "data.target", "must name a dataset folder")
        _check(bool(self.reference), "data.reference", "must name a dataset folder")
        _check(bool(self.styles), "data.styles", "needs at least one desired style ([data.styles.<name>] with reference = ...)")
        for name, style in self.styles.items():
            check_style_name(name, f"data.styles.{name}")
            _check(bool(style.reference), f"data.styles.{name}.reference", "must name a dataset folder")
        for pairing in self.pairings.trained:
            parse_background(self.background(pairing), self.background_key(pairing))
        _check(self.downscale >= 1, "data.downscale", "must be at least 1")
        _check(self.target_downscale >= 0, "data.target_downscale", "must be at least 1 (or 0: data.downscale)")
        _check(self.reference_downscale >= 0, "data.reference_downscale", "must be at least 1 (or 0: data.downscale)")
        _check(all(self.aabb[i] < self.aabb[i + 3] for i in range(3)), "data.aabb", "needs min < max on every axis")

    @property
    def pairings(self) -> Pairings:
        """The pairings of this data: trained ones and transfers."""
        return Pairings(tuple(self.styles))

    def dataset(self, pairing: Pairing) -> Path | None:
        """The dataset folder of a pairing, or None (only a transfer's ground truth may be absent)."""
        if pairing.style == ORIGINAL:
            path = self.target if pairing.scene == "target" else self.reference
        else:
            style = self.styles[pairing.style]
            path = style.target if pairing.scene == "target" else style.reference
        return Path(path) if path else None

    def downscale_of(self, scene: str) -> int:
        """The factor a scene's datasets are shrunk by (its own, else data.downscale)."""
        own = self.target_downscale if scene == "target" else self.reference_downscale
        return own or self.downscale

    def downscale_key(self, scene: str) -> str:
        """The config key that sets a scene's downscale, for messages."""
        own = self.target_downscale if scene == "target" else self.reference_downscale
        return f"data.{scene}_downscale" if own else "data.downscale"

    def dataset_key(self, pairing: Pairing) -> str:
        """The config key that names a pairing's dataset, for messages."""
        if pairing.style == ORIGINAL:
            return f"data.{pairing.scene}"
        return f"data.styles.{pairing.style}.{pairing.scene}"

    def background(self, pairing: Pairing) -> str:
        """The background setting of a pairing's dataset; a transfer has the target's."""
        if pairing.scene == "target":
            return self.target_background
        return self.reference_background if pairing.style == ORIGINAL else self.styles[pairing.style].reference_background

    def background_key(self, pairing: Pairing) -> str:
        """The config key of a pairing's background setting, for messages."""
        if pairing.scene == "target":
            return "data.target_background"
        if pairing.style == ORIGINAL:
            return "data.reference_background"
        return f"data.styles.{pairing.style}.reference_background"


@dataclass(frozen=True)
class ModelConfig:
    """Per-scene hash grids, a shared feature head and one tiny decoder per style."""

    __refused__: ClassVar[dict[str, str]] = _retired("model")

    encoder: Literal["hashgrid", "mlp"] = "hashgrid"
    """Scene encoder: fastjoint's hash grids, or "mlp", the research code's networks and schedule (see [mlp])."""
    grid_levels: int = 8
    """Number of hash-grid levels (L)."""
    grid_features_per_level: int = 2
    """Features stored per grid vertex (F)."""
    grid_log2_table_size: int = 17
    """log2 of the hash table size per level (T)."""
    grid_base_resolution: int = 16
    """Resolution of the coarsest level."""
    grid_max_resolution: int = 256
    """Resolution of the finest level; sets the per-level scale."""
    hidden: int = 64
    """Width of the feature head's hidden layers."""
    geometry_features: int = 15
    """Geometry features passed from the density network to the style-feature network."""
    sh_degree: int = 4
    """Degree of the spherical-harmonics encoding of the view direction (1 to 4)."""
    feature_dim: int = 2
    """Dimension of the style feature space (the method keeps it at 2; `analyze` draws a principal plane
    for more, and the viewer's painting needs 2)."""
    decoder_hidden: int = 32
    """Hidden width of each style decoder (feature and normal -> hidden -> RGB)."""
    share_head: bool = True
    """Share the feature head between target and reference scenes."""
    decoder_normal: bool = True
    """Each style decoder also reads the surface normal beside the style feature (fastjoint.model.joint: minus the
    gradient of the log density by central differences, where a sample is dense enough to have a surface), so that
    shading need not be written into the feature plane: every transfer on the kit rose and steadied across seeds
    (benchmarks/README.md, "Decoders that read the normal"), for about 1.85 times the training time. false: the
    method's decoders (feature -> RGB), which the fast renderer reads as lookup tables; runs trained before this key
    load as false."""

    def __post_init__(self) -> None:
        _check(self.grid_levels >= 1, "model.grid_levels", "must be at least 1")
        _check(self.grid_features_per_level >= 1, "model.grid_features_per_level", "must be at least 1")
        _check(4 <= self.grid_log2_table_size <= 24, "model.grid_log2_table_size", "must be between 4 and 24")
        _check(self.grid_base_resolution >= 2, "model.grid_base_resolution", "must be at least 2")
        _check(
            self.grid_max_resolution >= self.grid_base_resolution,
            "model.grid_max_resolution",
            "must be at least model.grid_base_resolution",
        )
        _check(1 <= self.sh_degree <= 4, "model.sh_degree", "must be between 1 and 4")
        for key in ("hidden", "geometry_features", "feature_dim", "decoder_hidden"):
            _check(getattr(self, key) >= 1, f"model.{key}", "must be at least 1")

    @property
    def per_level_scale(self) -> float:
        """Growth factor of the grid resolution from one level to the next."""
        if self.grid_levels == 1:
            return 1.0
        return math.exp(math.log(self.grid_max_resolution / self.grid_base_resolution) / (self.grid_levels - 1))


@dataclass(frozen=True)
class MlpConfig:
    """The research code's architecture, the baseline used when model.encoder = "mlp".

    Per scene, positional encodings feed an 8x256 ReLU MLP with a skip at layer 4, giving
    density and the 2-D feature; decoders are feature -> 32 -> 32 -> RGB; 64 uniform samples
    per ray between near and far, no occupancy grid; Adam at 5e-4 with exponential decay.
    """

    depth: int = 8
    """Layers of the position MLP."""
    width: int = 256
    """Width of the position MLP."""
    skip: int = 4
    """The positional encoding is fed again after this layer."""
    position_frequencies: int = 10
    """Frequencies of the positional encoding of positions."""
    direction_frequencies: int = 4
    """Frequencies of the positional encoding of view directions."""
    decoder_layers: int = 2
    """Hidden layers of each style decoder (of model.decoder_hidden units)."""
    samples_per_ray: int = 64
    """Uniform samples per ray between near and far."""
    near: float = 2.0
    """Distance along each ray where sampling starts."""
    far: float = 6.0
    """Distance along each ray where sampling ends."""
    lr: float = 5e-4
    """Learning rate of Adam."""
    lr_decay_steps: int = 250_000
    """The learning rate falls tenfold every this many steps (exponentially)."""

    def __post_init__(self) -> None:
        for key in ("depth", "width", "samples_per_ray", "decoder_layers", "lr_decay_steps"):
            _check(getattr(self, key) >= 1, f"mlp.{key}", "must be at least 1")
        _check(0 <= self.skip < self.depth, "mlp.skip", "must be a layer index below mlp.depth")
        _check(0 < self.near < self.far, "mlp.near", "needs 0 < mlp.near < mlp.far")
        _check(self.lr > 0, "mlp.lr", "must be positive")


@dataclass(frozen=True)
class RenderConfig:
    """Ray marching through the occupancy grid and compositing."""

    step_size: float = 0.03
    """Marching step in world units."""
    occ_resolution: int = 64
    """Cells per side of each scene's occupancy grid."""
    occ_levels: int | Literal["auto"] = "auto"
    """Occupancy-grid levels (nerfacc's): level 0 covers data.aabb, each next level a box twice as large
    around it; a bounded scene's hash grid spans the largest. auto: 1 for a bounded scene; for an unbounded
    one, the levels that reach as far as its capture's instant-ngp aabb_scale says, else 4 (nerfacc's
    choice for unbounded scenes). hashgrid encoder only above 1."""
    cone_angle: float | Literal["auto"] = "auto"
    """Steps lengthen with distance t as max(render.step_size, t * cone_angle) (instant-ngp's and nerfacc's
    cone stepping); 0: every step render.step_size. auto: 0 for a bounded scene, 1/128 for an unbounded one."""
    near: float | Literal["auto"] = "auto"
    """How far from the camera rays start (scene units), in training and in renders: a floater just in front
    of a camera, which only the views taken nearby see, is never sampled. A ray never starts more than nine
    tenths of the way from its camera to data.aabb, so nothing in the box or just outside it is cut. auto: 0
    for a bounded scene; for an unbounded one, half the size of data.aabb (benchmarks/README.md, "The near
    plane"). hashgrid encoder only."""
    occ_update_every: int = 8
    """Update the occupancy grids every this many steps."""
    occ_warmup_steps: int = 128
    """Until this step, every occupancy update evaluates every cell."""
    occ_threshold: float = 0.01
    """Opacity (density x step) above which a cell counts as occupied."""
    occ_ema_decay: float = 0.6
    """Decay of a cell's remembered opacity per update; lower carves empty space sooner."""
    chunk: int = 8192
    """Rays rendered at once when rendering whole images."""
    background: Colour = (1.0, 1.0, 1.0)
    """Colour behind evaluation and renders of datasets whose background is "random" (RGB in [0, 1])."""

    def __post_init__(self) -> None:
        _check(self.step_size > 0, "render.step_size", "must be positive")
        _check(self.occ_resolution >= 2, "render.occ_resolution", "must be at least 2")
        _check(self.occ_levels == "auto" or 1 <= self.occ_levels <= 8, "render.occ_levels", 'must be "auto" or between 1 and 8')
        _check(self.cone_angle == "auto" or self.cone_angle >= 0, "render.cone_angle", 'must be "auto" or at least 0 (0: uniform steps)')
        _check(self.near == "auto" or self.near >= 0, "render.near", 'must be "auto" or at least 0 (0: rays start at the camera)')
        _check(self.occ_update_every >= 1, "render.occ_update_every", "must be at least 1")
        _check(0.0 <= self.occ_ema_decay < 1.0, "render.occ_ema_decay", "must be in [0, 1)")
        _check(self.chunk >= 1, "render.chunk", "must be at least 1")
        _check(all(0.0 <= c <= 1.0 for c in self.background), "render.background", "needs values in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """The joint optimisation of the trained pairings."""

    __refused__: ClassVar[dict[str, str]] = _retired("train")

    steps: int = 1500
    """Optimisation steps; every step trains every trained pairing."""
    rays_per_pairing: int = 1024
    """Rays drawn per pairing per step (the first step's, where train.target_samples adapts them)."""
    target_samples: int | Literal["auto"] = "auto"
    """GPU-sized batches (nerfacc's recipe): after every step each pairing's ray count is scaled so that its
    next batch holds about this many samples; 0: always train.rays_per_pairing rays; auto: 262144 (2^18)
    on CUDA, 0 on the CPU."""
    lr: float = 1e-2
    """Peak learning rate of Adam (the hash-grid model; the mlp baseline uses mlp.lr)."""
    lr_warmup_steps: int = 50
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 1e-6
    """Weight decay of the networks (not of the hash grids)."""
    random_background: bool = True
    """Whether a background "auto" of images with transparency means "random" (a random colour per training ray, so
    that alpha is learned); false: they are composited on render.background."""
    desired_shape_features: bool = True
    """Whether the desired styles' photos also shape the scenes' style features (the method); false: only the original style's photos do, and the desired styles' decoders (and the shared
    density) learn from theirs, so a reference's pattern cannot hide in its features."""
    cover_weight: float = 0.1
    """Weight of the cover term: the mean squared distance from each of the target's surface features in a batch
    to the nearest of the reference's (held fixed), so that the target's materials settle where the reference's
    are and the desired styles' decoders do not extrapolate there; 0: off (the method as published, whose
    transfer depends on the seed: benchmarks/README.md, "A transfer that does not depend on the seed")."""
    cover_until_step: int | Literal["auto"] = "auto"
    """The cover term trains only the steps before this one, while the feature plane takes its layout; 0: every
    step; auto: the first sixth of train.steps (250 of the demo's 1,500)."""
    saturation_weight: float = 1.0
    """Weight of the saturation penalty: each scene's surface features in a batch (the cover term's points) are held
    where their tanh still passes gradient (logits within +-2, fastjoint.train.FEATURE_BOUND). Without it the features
    of some scenes saturate in a corner of the plane early and stay there, one colour per scene, until a
    seed-dependent step; with decoders that read the normal it is half of their gain (benchmarks/README.md,
    "Decoders that read the normal"); 0: off."""
    style_smoothness: float = 0.0
    """Weight of a penalty on how fast each desired style's change of colour (its decoder minus the original's,
    the latter held fixed) varies across the feature plane, at random points of the plane: where no reference
    feature pins a desired decoder down, it extends the change of its neighbours, so that a target feature
    off the reference's gets the change of the nearest ones. 0: off, the default: 0.001 raised the kit's
    transfers at five seeds, but on the tests' tiny analogy it drove every feature into a corner of the plane,
    where the random points rarely fall (benchmarks/README.md, "The roughness term")."""
    analogy_steps: int = 1000
    """Steps of the analogy fit once the joint training is done: each desired style's decoder is fitted again so that
    the target's surface takes the change of colour the reference shows where it looks most alike (its original
    colour, its facing and its feature; fastjoint.analogy), rather than whatever the decoder reads where the seed put
    the target's features; 0: off (benchmarks/README.md, "The analogy fit")."""
    seed: int = 0
    """Seed of every random choice; the same seed gives the same run on the CPU."""
    log_every: int = 50
    """Write a line to metrics.jsonl every this many steps."""
    checkpoint_every: int = 250
    """Write checkpoints/latest.pt every this many steps."""

    def __post_init__(self) -> None:
        for key in ("steps", "rays_per_pairing", "log_every", "checkpoint_every"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be at least 1")
        _check(self.lr > 0, "train.lr", "must be positive")
        _check(
            self.target_samples == "auto" or self.target_samples >= 0, "train.target_samples", 'must be "auto", 0 (off) or a sample count'
        )
        _check(self.lr_warmup_steps >= 0, "train.lr_warmup_steps", "must not be negative")
        _check(self.cover_weight >= 0, "train.cover_weight", "must not be negative (0: off)")
        _check(self.saturation_weight >= 0, "train.saturation_weight", "must not be negative (0: off)")
        _check(self.style_smoothness >= 0, "train.style_smoothness", "must not be negative (0: off)")
        _check(self.analogy_steps >= 0, "train.analogy_steps", "must not be negative (0: off)")
        _check(
            self.cover_until_step == "auto" or self.cover_until_step >= 0,
            "train.cover_until_step",
            'must be "auto", 0 (every step) or a step',
        )

    @property
    def cover_steps(self) -> int:
        """The step before which the cover term trains (0: every step): train.cover_until_step resolved."""
        return self.steps // COVER_FRACTION if self.cover_until_step == "auto" else self.cover_until_step


@dataclass(frozen=True)
class BackendConfig:
    """Which implementation runs each accelerated piece."""

    grid: Literal["auto", "native", "tcnn", "torch"] = "auto"
    """Hash-grid encoding: the native kernels of cuda_ext (CPU and CUDA, built on first use),
    tiny-cuda-nn's HashGrid (CUDA, tinycudann installed), or the PyTorch reference; auto takes
    native where it builds, else torch."""
    march: Literal["auto", "nerfacc", "torch"] = "auto"
    """Ray marching: nerfacc (CUDA) or our PyTorch marcher (any device)."""
    composite: Literal["auto", "fused", "torch"] = "auto"
    """Compositing of packed samples: the fused native kernel of cuda_ext (CPU and CUDA,
    built on first use) or the PyTorch reference."""
    mlp: Literal["auto", "tcnn", "torch"] = "auto"
    """The feature heads' and style decoders' networks: tiny-cuda-nn's fully fused MLPs (CUDA,
    tinycudann installed; fp16, hidden widths up to 128) or PyTorch's; auto takes tcnn where it
    runs. Checkpoints load under either."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """A fastjoint run."""

    name: str = "demo"
    """Run name; the run is written to <output_dir>/<name>/."""
    output_dir: str = "runs"
    """Folder that holds runs."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train and render; auto picks CUDA when present."""
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    mlp: MlpConfig = field(default_factory=MlpConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self) -> None:
        plain = bool(self.name) and self.name not in (".", "..") and not any(c in self.name for c in "/\\")
        _check(plain, "name", f"must be a plain folder name (no '/', not '.' or '..'), got '{self.name}'")
        uniform = 'needs model.encoder = "hashgrid" (the mlp baseline samples uniformly between mlp.near and mlp.far)'
        if self.model.encoder != "hashgrid":
            _check(self.render.occ_levels in ("auto", 1), "render.occ_levels", uniform)
            _check(self.data.unbounded in ("auto", "none"), "data.unbounded", uniform)
            _check(self.render.near in ("auto", 0), "render.near", uniform)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise UserError(f"{key}: {problem}")


# --- reading and writing -------------------------------------------------------------


def load_config(path: str | Path, saved: bool = False) -> Config:
    """Reads a TOML config; every problem is a UserError naming the file and key.

    `saved`: the file is a run's own config.toml, where a retired option at its off value (as
    runs trained before its retirement wrote it) is dropped instead of refused, and a run from
    before unbounded scenes reads as the `auto` that means what it did.
    """
    table = read_toml(path, "config file")
    if saved:
        _drop_retired(table)
        _before_extents(table)
        _before_normals(table)
    try:
        return from_dict(Config, table)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def _before_extents(table: dict[str, Any]) -> None:
    """A run trained before render.cone_angle saved render.occ_levels = 1 where `auto` now means the same
    (its checkpoint has no extents: it loads bounded), so that resuming it with today's defaults works."""
    render = table.get("render")
    if isinstance(render, dict) and "cone_angle" not in render and render.get("occ_levels") == 1:
        render["occ_levels"] = "auto"


def _before_normals(table: dict[str, Any]) -> None:
    """A run trained before model.decoder_normal has decoders that read the feature alone (its checkpoint's
    decoders have feature_dim inputs): it loads as false."""
    model = table.get("model")
    if isinstance(model, dict) and "decoder_normal" not in model:
        model["decoder_normal"] = False


def _drop_retired(table: dict[str, Any]) -> None:
    for dotted, off in RETIRED_OPTIONS.items():
        section, key = dotted.split(".")
        if isinstance(table.get(section), dict) and table[section].get(key, off) == off:
            table[section].pop(key, None)


def checked(config: Config) -> Config:
    """The config rebuilt through the TOML checks: command-line values get the same validation."""
    return from_dict(Config, to_dict(config))


def changed_keys(old: Config, new: Config, keys: tuple[str, ...]) -> list[str]:
    """The dotted keys under `keys` (sections or single keys) whose values differ."""
    a, b = _flatten(to_dict(old)), _flatten(to_dict(new))
    inside = [k for k in sorted(set(a) | set(b)) if any(k == key or k.startswith(key + ".") for key in keys)]
    return [k for k in inside if a.get(k) != b.get(k)]


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
