"""Config files: defaults, round trips and one-line errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, ClassVar

import pytest

from fastjoint import config, schema
from fastjoint.config import Config, DataConfig, ModelConfig, StyleData, load_config, to_toml
from fastjoint.errors import UserError
from fastjoint.schema import Invalid, Range, from_dict

REPO = Path(__file__).resolve().parents[1]


def test_demo_config_lists_every_default():
    demo = load_config(REPO / "configs" / "demo.toml")
    defaults = DataConfig(target="t", reference="r", styles={"s": StyleData("r")})
    assert demo == Config(data=demo.data)
    assert (demo.data.downscale, demo.data.aabb) == (defaults.downscale, defaults.aabb)


DATA = '[data]\ntarget = "t"\nreference = "r"\n[data.styles.blue]\nreference = "rb"\n'


def test_styles_are_data(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(DATA + '[data.styles.red]\nreference = "rr"\ntarget = "tr"\n')
    data = load_config(path).data
    assert [p.name for p in data.pairings.trained] == ["target:original", "reference:original", "reference:blue", "reference:red"]
    assert [p.name for p in data.pairings.transfers] == ["target:blue", "target:red"]
    assert data.dataset(data.pairings.parse("target:red")) == Path("tr")
    assert data.dataset(data.pairings.parse("target:blue")) is None  # no ground truth
    with pytest.raises(UserError, match=r"unknown pairing 'target:green' \(this run has target:original"):
        data.pairings.parse("target:green")


def test_toml_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'name = "x"\n[train]\nsteps = 7\n'
        + DATA.replace("[data]\n", "[data]\naabb = [0, 0, 0, 1, 2, 3]\n")
        + "[render]\nbackground = [0, 0.5, 1]\n"
    )
    config = load_config(path)
    assert config.train.steps == 7 and config.data.aabb == (0.0, 0.0, 0.0, 1.0, 2.0, 3.0)
    path.write_text(to_toml(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nstepz = 3\n", r"unknown key 'train.stepz' \(did you mean 'train.steps'\?\)"),
        ("[train]\nsteps = 2.5\n", r"'train.steps' must be an integer, got 2.5"),
        ("[train]\nsteps = true\n", r"'train.steps' must be an integer"),
        (DATA.replace("[data]\n", "[data]\naabb = [1, 2]\n"), r"'data.aabb' must be 6 numbers"),
        ("[train]\nsteps = 3\n", r"missing \[data\] table 'data'"),
        ('[data]\nreference = "r"\n', r"missing key 'data.target'"),
        ('[data]\ntarget = "t"\nreference = "r"\n', r"data.styles: needs at least one desired style"),
        (DATA + '[data.styles.original]\nreference = "x"\n', r"data.styles.original: 'original' is the scenes' own style"),
        (DATA + '[data.styles."Big Blue"]\nreference = "x"\n', r"data.styles.Big Blue: style names are lower-case"),
        (DATA + "[data.styles.red]\n", r"missing key 'data.styles.red.reference'"),
        ('[data]\ntarget_original = "t"\n', r"'data.target_original': the \[data\] section now reads target = "),
        ('name = ".."\n' + DATA, r"name: must be a plain folder name"),
        ("[train]\nlr = inf\n" + DATA, r"'train.lr' must be a number, got inf"),
        ('device = "gpu"\n', r"'device' must be one of \"auto\", \"cpu\", \"cuda\""),
        ("train = 3\n", r"'train' must be a table"),
        ("[train]\nsteps = 0\n", r"train.steps: must be at least 1"),
        (DATA.replace("[data]\n", "[data]\naabb = [0, 0, 0, 0, 1, 1]\n"), r"data.aabb: needs min < max"),
        ("[train\n", r"not valid TOML"),
        ("[train]\ntarget_samples = -5\n" + DATA, r'train.target_samples: must be "auto", 0 \(off\) or a sample count'),
        ('[train]\ntarget_samples = "big"\n' + DATA, r"'train.target_samples' must be an integer or one of \"auto\", got 'big'"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        load_config(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_missing_file():
    with pytest.raises(UserError, match="nowhere.toml: config file not found"):
        load_config("nowhere.toml")


def test_per_level_scale_spans_base_to_max():
    model = ModelConfig()
    assert model.grid_base_resolution * model.per_level_scale ** (model.grid_levels - 1) == pytest.approx(model.grid_max_resolution)


# --- the shared validator (fastjoint.schema), as any section or recipe table uses it -------


@dataclasses.dataclass(frozen=True)
class _Part:
    width: Annotated[float, Range(0.5, 2.0)] = 1.0

    def __post_init__(self) -> None:
        if self.width == 1.5:
            raise Invalid("width", "must not be 1.5")


@dataclasses.dataclass(frozen=True)
class _Section:
    __refused__: ClassVar[dict[str, str]] = {"old_width": "retired; its results are in benchmarks/README.md"}

    parts: tuple[_Part, ...] = ()
    named: dict[str, _Part] = dataclasses.field(default_factory=dict)
    spare: _Part | None = None


@pytest.mark.parametrize(
    "table, message",
    [
        ({"old_width": 3}, r"^'section.old_width': retired; its results are in benchmarks/README.md$"),
        ({"partz": []}, r"^unknown key 'section.partz' \(did you mean 'section.parts'\?\)$"),
        ({"parts": [{}, {"width": 3}]}, r"^'section.parts\[1\].width' must be a number in \[0.5, 2\], got 3$"),
        ({"parts": {"width": 1}}, r"^'section.parts' must be a list of tables \(\[\[section.parts\]\]\)$"),
        ({"named": {"a": {"width": 1.5}}}, r"^'section.named.a.width' must not be 1.5$"),
        ({"spare": {"width": "wide"}}, r"^'section.spare.width' must be a number in \[0.5, 2\], got 'wide'$"),
    ],
)
def test_shared_validator_names_the_key(table, message):
    with pytest.raises(UserError, match=message):
        from_dict(_Section, table, prefix="section.")


def test_shared_validator_reads_nested_tables():
    section = from_dict(_Section, {"parts": [{}, {"width": 2}], "spare": {"width": 0.5}})
    assert section == _Section(parts=(_Part(), _Part(2.0)), spare=_Part(0.5)) and isinstance(section.parts[1].width, float)
    assert from_dict(_Section, {}).spare is None


def test_config_reexports_the_shared_validator():
    assert config.from_dict is from_dict and config.coerce is schema.coerce and config.describe is schema.describe
    assert config.to_toml is schema.to_toml


def test_a_run_from_before_decoders_read_the_normal_loads_as_such(tmp_path):
    """A run's config.toml without model.decoder_normal was trained with decoders that read the feature alone
    (its checkpoint's decoders have 2 inputs): as a saved config it reads false, as a config of one's own the
    default (true) holds, and a saved config that names the key keeps it."""
    path = tmp_path / "config.toml"
    path.write_text(DATA + "[model]\nfeature_dim = 2\n")
    assert load_config(path, saved=True).model.decoder_normal is False
    assert load_config(path).model.decoder_normal is True
    path.write_text(DATA + "[model]\ndecoder_normal = true\n")
    assert load_config(path, saved=True).model.decoder_normal is True
