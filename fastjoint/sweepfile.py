"""A sweep file: a grid of runs over a base config, and its points.

```toml
name = "kit"                  # the sweep folder: <output_dir>/<name>/
output_dir = "sweeps"
configs = ["configs/digger-recolour.toml", "configs/robot-recolour.toml"]   # base configs
seeds = [0, 1, 2]
after = ["eval"]              # what each run does once trained: eval, render, analyze

[axes]                        # any config key and its values, crossed with each other
"train.desired_shape_features" = [true, false]

[[datasets]]                  # optional: dataset pairs or style tables, each replacing [data]
label = "two-styles"
target = "data/generated/paper/digger/original"
reference = "data/generated/paper/spheres/original"
styles = { recolour = { reference = "data/generated/paper/spheres/recolour" } }
```

The grid is configs x datasets x the axes' values x seeds. Each point is an ordinary run
folder, `<sweep folder>/<point name>/`, whose config is the base config with the point's
values; its name is made of its values (`digger-recolour,desired_shape_features=false,seed1`),
and the same name without the seed names its group, over which the summary takes means.
Paths are read from the working folder, as `fastjoint train` reads them.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastjoint.config import Config, DataConfig, load_config
from fastjoint.errors import UserError
from fastjoint.schema import Invalid, from_dict, read_toml, to_dict, toml_value

AFTER = ("eval", "render", "analyze")
"""What a run can do once trained, in this order."""
NOT_AN_AXIS = ("name", "output_dir", "train.seed", "data")
"""Config keys a sweep sets itself (the run's name and folder, the seed) or through `datasets`."""


@dataclass(frozen=True)
class DatasetChoice:
    """One value of the datasets axis: a [data] table that replaces the base config's, and its label."""

    label: str
    """Its name in run names and the summary."""
    data: DataConfig
    """The [data] table."""


@dataclass(frozen=True, kw_only=True)
class SweepFile:
    """A grid of runs: base configs x datasets x axes x seeds."""

    name: str
    """The sweep's folder name, under output_dir."""
    output_dir: str = "sweeps"
    """Folder that holds sweeps."""
    configs: tuple[str, ...]
    """Base config files (TOML, as `fastjoint train` reads); each is a value of the grid."""
    seeds: tuple[int, ...] = (0,)
    """train.seed of each run: every other point of the grid is trained at each seed."""
    after: tuple[Literal["eval", "render", "analyze"], ...] = ("eval",)
    """What each run does once trained: eval (RUN/eval.json, which the summary reads), render
    (the transfers' test views and orbit), analyze (RUN/analysis/)."""
    # Read apart from the schema (their values are any config key's, or [data] tables):
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Config keys (dotted, e.g. "train.lr") and the values each takes; the axes are crossed."""
    datasets: tuple[DatasetChoice, ...] = ()
    """Optional [[datasets]] tables: each a label and a [data] table replacing the base config's."""

    def __post_init__(self) -> None:
        plain = bool(self.name) and self.name not in (".", "..") and not any(c in self.name for c in "/\\")
        if not plain:
            raise Invalid("name", f"must be a plain folder name (no '/', not '.' or '..'), got '{self.name}'")
        if not self.configs:
            raise Invalid("configs", "needs at least one config file")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise Invalid("seeds", f"needs at least one seed, each once, got {list(self.seeds)}")
        if len(set(self.after)) != len(self.after):
            raise Invalid("after", f"names a step twice: {list(self.after)}")

    @property
    def folder(self) -> Path:
        return Path(self.output_dir) / self.name


@dataclass(frozen=True)
class GridPoint:
    """One run of a sweep."""

    name: str
    """The run's folder name (its values, then its seed)."""
    group: str
    """The name without the seed: the summary's row."""
    values: dict[str, Any]
    """What sets this point apart: "config", "datasets", each axis key, "train.seed"."""
    config: Config
    """The run's config (output_dir: the sweep folder, name: `name`)."""


def load_sweep(path: str | Path) -> tuple[SweepFile, list[GridPoint]]:
    """Reads a sweep file and builds every point's config; every problem is one UserError
    naming the file and the key (or the axis value) at fault, before any run starts."""
    table = read_toml(path, "sweep file")
    try:
        axes = _axes(table.pop("axes", {}))
        datasets = _datasets(table.pop("datasets", []))
        sweep = from_dict(SweepFile, table)
        sweep = dataclasses.replace(sweep, axes=axes, datasets=datasets)
        return sweep, grid(sweep)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def _axes(value: Any) -> dict[str, tuple[Any, ...]]:
    """The [axes] table: dotted config keys, each a non-empty list of distinct values."""
    if not isinstance(value, dict):
        raise UserError("'axes' must be a table ([axes])")
    axes = {}
    for key, values in value.items():
        if isinstance(values, dict):
            raise UserError(f"'axes.{key}' must be a list of values; write the key dotted and quoted: \"{key}.<key>\" = [...]")
        if not isinstance(values, list) or not values:
            raise UserError(f"'axes.\"{key}\"' must be a non-empty list of values, got {values!r}")
        if key in NOT_AN_AXIS or key.startswith("data."):
            raise UserError(f"'axes.\"{key}\"': set by the sweep itself (seeds, datasets, name), not an axis")
        if len({repr(v) for v in values}) != len(values):
            raise UserError(f"'axes.\"{key}\"' lists a value twice: {values!r}")
        axes[key] = tuple(values)
    return axes


def _datasets(value: Any) -> tuple[DatasetChoice, ...]:
    """The [[datasets]] tables: each a label and the keys of a [data] table."""
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise UserError("'datasets' must be a list of tables ([[datasets]])")
    choices = []
    for index, entry in enumerate(value):
        entry = dict(entry)
        label = entry.pop("label", None)
        if not isinstance(label, str) or not _is_plain_label(label):
            raise UserError(f"'datasets[{index}].label' must be a plain name (letters, digits, - . _), got {label!r}")
        choices.append(DatasetChoice(label, from_dict(DataConfig, entry, prefix=f"datasets[{index}].")))
    labels = [c.label for c in choices]
    if len(set(labels)) != len(labels):
        raise UserError(f"'datasets': two tables share a label: {labels}")
    return tuple(choices)


def grid(sweep: SweepFile) -> list[GridPoint]:
    """Every point of the sweep, in a fixed order (configs, datasets, axes, seeds)."""
    bases = {}
    for index, config_path in enumerate(sweep.configs):
        try:
            bases[config_path] = to_dict(load_config(config_path))
        except UserError as error:
            raise UserError(f"'configs[{index}]': {error}") from None
    stems = [Path(c).stem for c in sweep.configs]
    if len(set(stems)) != len(stems):
        raise UserError(f"'configs': two config files share a name ({', '.join(sweep.configs)}): rename one")
    datasets: list[DatasetChoice | None] = list(sweep.datasets) or [None]
    keys = list(sweep.axes)
    short = _short_names(keys)
    points = []
    for config_path, dataset, values in itertools.product(sweep.configs, datasets, itertools.product(*sweep.axes.values())):
        parts = [Path(config_path).stem] if len(sweep.configs) > 1 or not keys and dataset is None else []
        parts += [dataset.label] if dataset is not None else []
        parts += [f"{short[k]}={_slug(v)}" for k, v in zip(keys, values, strict=True)]
        group = ",".join(parts)
        for seed in sweep.seeds:
            name = f"{group},seed{seed}" if group else f"seed{seed}"
            table = copy.deepcopy(bases[config_path])
            if dataset is not None:
                table["data"] = to_dict(dataset.data)
            for key, value in zip(keys, values, strict=True):
                _set(table, key, value, f'axes."{key}" = {toml_value(value)}')
            table["train"] = {**table.get("train", {}), "seed": seed}
            table["output_dir"] = str(sweep.folder)
            table["name"] = name
            try:
                config = from_dict(Config, table)
            except UserError as error:
                where = f"axes ({', '.join(f'{k} = {toml_value(v)}' for k, v in zip(keys, values, strict=True))})" if keys else "point"
                raise UserError(f"{where} with {config_path}: {error}") from None
            point_values = {
                "config": config_path,
                **({"datasets": dataset.label} if dataset else {}),
                **dict(zip(keys, values, strict=True)),
            }
            points.append(GridPoint(name, group or "all", {**point_values, "train.seed": seed}, config))
    return points


def _set(table: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """Puts `value` at a dotted key of a config's nested dict; the key must name a value, not a section."""
    *sections, key = dotted.split(".")
    node = table
    for depth, section in enumerate(sections):
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise UserError(f"{where}: '{'.'.join(sections[: depth + 1])}' is not a section")
    if isinstance(node.get(key), dict):
        raise UserError(f"{where}: '{dotted}' is a section, not a key: name one of its keys")
    node[key] = value


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each axis key by its last part, or in full where two axes share it."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def _slug(value: Any) -> str:
    text = toml_value(value).strip('"')
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "empty"


def _is_plain_label(label: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", label))
