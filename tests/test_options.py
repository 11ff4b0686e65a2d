"""The options that measured within or above the method (train.desired_shape_features, model.feature_dim),
and the refusal of those retired after they lost (benchmarks/README.md, "Retired options")."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_config, write_config
from fastjoint.config import RETIRED_AT, RETIRED_OPTIONS, load_config, retired_message
from fastjoint.errors import UserError
from fastjoint.plane import FeaturePlane
from fastjoint.schema import toml_value


def test_desired_styles_can_read_the_features_without_shaping_them():
    from fastjoint.architecture import build_model
    from fastjoint.config import Config, DataConfig, StyleData, TrainConfig

    data = DataConfig(target="t", reference="r", styles={"pattern": StyleData(reference="p")})
    x, d = torch.rand(64, 3) - 0.5, torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    encoder_grads, decoder_grads = {}, {}
    for shape in (True, False):
        torch.manual_seed(0)
        model = build_model(Config(data=data, train=TrainConfig(desired_shape_features=shape)))
        model.query("reference", "pattern", x, d).rgb.sum().backward()  # a loss on the pattern's colours
        encoder = model.encoders["reference"].parameters()
        encoder_grads[shape] = sum(0.0 if p.grad is None else p.grad.abs().sum().item() for p in encoder)
        decoder_grads[shape] = [p.grad for p in model.decoders["pattern"].parameters()]
        original = model.query("reference", "original", x, d).rgb.sum()
        assert original.requires_grad  # the original style always shapes the features
    assert encoder_grads[True] > 0 and encoder_grads[False] == 0  # read, not shaped
    for shaped, read in zip(decoder_grads[True], decoder_grads[False], strict=True):
        torch.testing.assert_close(read, shaped, rtol=0, atol=0)  # the decoder learns the same either way


def test_principal_plane_of_features_in_three_dimensions():
    generator = torch.Generator().manual_seed(0)
    flat = torch.randn(500, 2, generator=generator) @ torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.5, 0.0]]) + torch.tensor([0.1, 0.2, 0.3])
    plane = FeaturePlane.of([flat[:200], flat[200:]], 3)
    torch.testing.assert_close(plane.axes.T @ plane.axes, torch.eye(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(plane.lift(plane.project(flat)), flat, atol=1e-4, rtol=0)  # the samples lie in the plane
    two = FeaturePlane.of([flat[:, :2]], 2)
    assert torch.equal(two.project(flat[:, :2]), flat[:, :2])


@pytest.mark.slow
def test_a_run_with_the_options_trains_analyses_restyles_and_the_viewer_says_no(tiny_data, tmp_path):
    train = {"steps": 200, "log_every": 50, "desired_shape_features": False}
    config = tiny_config(tiny_data, tmp_path / "runs", model={"feature_dim": 3}, train=train)
    path = write_config(config, tmp_path / "options.toml")
    result = run_cli("train", str(path), "--no-render", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scores = json.loads((config.run_dir / "eval.json").read_text())
    assert scores["pairings"]["target:original"]["psnr"] > 15

    result = run_cli("analyze", str(config.run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    analysis = json.loads((config.run_dir / "analysis.json").read_text())
    assert len(analysis["fits"]["target"]["mean"]) == 3 and math.isfinite(analysis["kl"]["symmetric"])
    assert len(analysis["plane"]["axes"]) == 3 and len(analysis["plane"]["axes"][0]) == 2

    reference = tiny_data / "reference" / "recolour"
    result = run_cli("restyle", str(config.run_dir), "again", str(reference), "--steps", "30", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (config.run_dir / "styles" / "again.pt").is_file()
    result = run_cli("render", str(config.run_dir), "--pairing", "target:again", cwd=tmp_path)  # the stored style loads
    assert result.returncode == 0, result.stderr
    assert len(list((config.run_dir / "renders" / "target_again").glob("*.png"))) > 0

    result = run_cli("view", str(config.run_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {config.run_dir / 'config.toml'}: the viewer's feature plane needs model.feature_dim = 2 "
        "(this run: 3); eval, render and restyle work on it"
    ]


RETIRED_ON = {
    "train.align": '"moments"',
    "train.align_weight": "0.1",
    "train.align_warmup_steps": "50",
    "model.decoder_position": "2",
    "model.decoder_position_original": "false",
    "model.pattern_field": "8",
    "model.pattern_cycles": "2.0",
    "train.desired_gradient": "0.1",
    "train.desired_through": '"head"',
    "train.desired_from_step": "500",
    "train.desired_until_step": "500",
    "train.cover_through": '"grid"',
    "train.cover_margin": "0.05",
    "train.appearance": "true",
    "train.distortion_weight": "0.002",
    "train.near_gradient_distance": "1.5",
    "train.refine_poses": '"target"',
    "train.pose_lr": "0.01",
    "train.cover_decay": "true",
    "train.match_weight": "0.1",
    "train.match_metric": "0.04",
}


def _with_key(path: Path, dotted: str, value: str) -> Path:
    section, key = dotted.split(".")
    text, count = re.subn(rf"^\[{section}\]$", f"[{section}]\n{key} = {value}", path.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1
    path.write_text(text)
    return path


@pytest.mark.parametrize("key", sorted(RETIRED_OPTIONS))
def test_a_config_naming_a_retired_option_is_refused_in_one_line(tiny_data, tmp_path, key):
    assert set(RETIRED_ON) == set(RETIRED_OPTIONS)
    path = _with_key(write_config(tiny_config(tiny_data, tmp_path / "runs"), tmp_path / "old.toml"), key, RETIRED_ON[key])
    with pytest.raises(UserError) as refused:
        load_config(path)
    assert str(refused.value) == f"{path}: {retired_message(key)}"
    assert "retired" in str(refused.value) and "benchmarks/README.md" in str(refused.value) and RETIRED_AT[key] in str(refused.value)
    # A run trained before the retirement saved its options at their off values: that still loads;
    # one that used an option does not.
    with pytest.raises(UserError, match="retired"):
        load_config(path, saved=True)
    off = _with_key(write_config(tiny_config(tiny_data, tmp_path / "runs"), tmp_path / "saved.toml"), key, toml_value(RETIRED_OPTIONS[key]))
    assert load_config(off, saved=True) == tiny_config(tiny_data, tmp_path / "runs")
    with pytest.raises(UserError, match="retired"):
        load_config(off)


@pytest.mark.slow
def test_the_cli_refuses_a_retired_option_in_one_line_and_writes_nothing(tiny_data, tmp_path):
    config_file = write_config(tiny_config(tiny_data, tmp_path / "runs"), tmp_path / "tiny.toml")
    result = run_cli("train", str(config_file), "--model.decoder-position", "2", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {retired_message('model.decoder_position')}"]
    path = _with_key(tmp_path / "tiny.toml", "train.align", '"sliced"')
    result = run_cli("train", str(path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"error: {path}: {retired_message('train.align')}"]
    assert not (tmp_path / "runs").exists()
