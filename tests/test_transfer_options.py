"""The pattern-transfer experiments' options: feature alignment, position-aware decoders, pattern fields, feature_dim."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from conftest import run_cli, tiny_config, write_config
from fastjoint.align import alignment_loss, moments_distance, sliced_distance, warmup_weight
from fastjoint.analyze import FeaturePlane
from fastjoint.model import JointModel
from fastjoint.model.decoder import PatternDecoder, PatternField, StyleDecoder
from fastjoint.scenes.raytrace import albedo
from fastjoint.scenes.recipe import Material, Pattern


def cloud(n: int, seed: int, shift=(0.0, 0.0), scale=1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=generator) * scale + torch.tensor(shift)


def test_moments_distance_is_the_moments_gap():
    a = cloud(4000, 0)
    assert moments_distance(a, a).item() == pytest.approx(0.0, abs=1e-12)
    shifted = a + torch.tensor([0.3, -0.4])  # same covariance, mean moved by 0.5
    assert moments_distance(a, shifted).item() == pytest.approx(0.25, rel=1e-5)
    wider = a * 2.0  # covariance x4: its Frobenius gap is 3 |cov|
    cov = torch.cov(a.T)
    assert moments_distance(a, wider).item() == pytest.approx((3 * cov).square().sum().item(), rel=1e-4)


def test_sliced_distance_separates_distributions_the_moments_cannot():
    generator = torch.Generator().manual_seed(1)
    same_a, same_b = cloud(4000, 2), cloud(4000, 3)
    # Two clusters at +-1 (variance 1 + 0.01 on x) against one normal of the same mean and covariance.
    signs = torch.randint(0, 2, (4000, 1), generator=torch.Generator().manual_seed(4)).float() * 2 - 1
    bimodal = torch.cat([signs * 1.0, torch.zeros(4000, 1)], dim=1) + cloud(4000, 5, scale=0.1)
    normal = cloud(4000, 6) * torch.tensor([math.sqrt(1.01), 0.1])
    assert moments_distance(bimodal, normal).item() < 0.01
    close = sliced_distance(same_a, same_b, generator).item()
    apart = sliced_distance(bimodal, normal, generator).item()
    assert close < 0.005 and apart > 20 * close


def test_alignment_moves_only_the_target():
    target = cloud(64, 7).requires_grad_()
    reference = cloud(64, 8, shift=(0.5, 0.0)).requires_grad_()
    loss = alignment_loss("moments", target, reference, torch.Generator().manual_seed(0))
    loss.backward()
    assert target.grad is not None and target.grad.abs().sum() > 0
    assert reference.grad is None
    assert alignment_loss("moments", target[:5], reference, torch.Generator()) is None  # too few surface points


def test_warmup_rises_linearly():
    assert [warmup_weight(0.1, 100, s) for s in (0, 50, 100, 400)] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    assert warmup_weight(0.1, 0, 0) == 0.1


def test_position_aware_decoders_see_the_position_code():
    encoders = {"target": _Constant(), "reference": _Constant()}
    model = JointModel(encoders, ["original", "pattern"], feature_dim=2, decoder_hidden=8, position_octaves=3, box=(-2, -2, -2, 2, 2, 2))
    assert model.decoder_inputs == 2 + 18
    assert isinstance(model.decoders["pattern"], StyleDecoder) and model.decoders["pattern"].net[0].in_features == 20
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 2.0]])
    _, decoder_input = model.features("target", x, torch.nn.functional.normalize(torch.ones(2, 3), dim=-1))
    assert decoder_input.shape == (2, 20)
    assert torch.equal(model.style_feature(decoder_input), torch.full((2, 2), 0.25))
    # The code: sin, then cos, of 2^k pi p for p = x scaled from the box to [-1, 1] (here x / 2).
    angles = torch.tensor([0.5, -1.0, 1.0])[None] * (math.pi * torch.tensor([1.0, 2.0, 4.0]))[:, None]
    torch.testing.assert_close(decoder_input[1, 2:], torch.cat([angles.flatten().sin(), angles.flatten().cos()]))
    # Bare features (the material map) are decoded at the box's centre.
    torch.testing.assert_close(model.plane_inputs(torch.zeros(1, 2)), torch.cat([torch.zeros(1, 2), decoder_input[:1, 2:]], dim=1))
    # The two scenes' same point, with the same feature, decode the same way: the code is of world position.
    _, other = model.features("reference", x, torch.ones(2, 3))
    assert torch.equal(other, decoder_input)
    plain = JointModel(encoders, ["original"], feature_dim=2, decoder_hidden=8)
    assert plain.decoder_inputs == 2 and plain.features("target", x, x)[1].shape == (2, 2)
    assert "position_box" not in plain.state_dict()  # checkpoints keep their old form


def test_the_shared_original_decoder_can_stay_a_function_of_the_feature_alone():
    encoders = {"target": _Constant(), "reference": _Constant()}
    model = JointModel(encoders, ["original", "pattern"], 2, 8, position_octaves=2, box=(-1, -1, -1, 1, 1, 1), position_original=False)
    assert model.decoders["original"].net[0].in_features == 2 and model.decoders["pattern"].net[0].in_features == 14
    inputs = torch.rand(50, 14) * 2 - 1
    moved = inputs.clone()
    moved[:, 2:] = torch.rand(50, 12)  # another place, the same feature
    assert torch.equal(model.decode("original", inputs), model.decode("original", moved))
    assert not torch.equal(model.decode("pattern", inputs), model.decode("pattern", moved))
    # A new style starts as the original's copy (restyle): position weights at zero, same colours.
    copy = model.decoder_from_original()
    assert copy.net[0].in_features == 14
    torch.testing.assert_close(copy(inputs), model.decode("original", inputs))


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


def test_pattern_decoders_draw_one_field_of_position_as_the_feature_says():
    encoders = {"target": _Constant(), "reference": _Constant()}
    model = JointModel(encoders, ["original", "pattern"], 2, 8, box=(-2, -2, -2, 2, 2, 2), pattern_width=16)
    assert model.decoder_inputs == 5
    assert isinstance(model.decoders["pattern"], PatternDecoder)
    assert isinstance(model.decoders["original"], StyleDecoder) and model.decoders["original"].net[0].in_features == 2
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]])
    _, decoder_input = model.features("target", x, torch.ones(2, 3))
    torch.testing.assert_close(decoder_input[:, 2:], torch.tensor([[0.0, 0.0, 0.0], [0.5, -1.0, 1.0]]))  # x / 2, clamped
    torch.testing.assert_close(model.plane_inputs(torch.zeros(1, 2)), torch.zeros(1, 5))  # the material map: the box's centre

    inputs = torch.rand(50, 5) * 2 - 1
    moved = inputs.clone()
    moved[:, 2:] = torch.rand(50, 3) * 2 - 1  # another place, the same feature
    assert torch.equal(model.decode("original", inputs), model.decode("original", moved))
    # A new style starts as the original's copy (restyle): the gate at zero, the field unseen.
    copy = model.decoder_from_original()
    assert isinstance(copy, PatternDecoder)
    torch.testing.assert_close(copy(inputs), model.decode("original", inputs))
    torch.testing.assert_close(copy(moved), model.decode("original", inputs))
    # Opened, the gate lets position change the colour, only through the one field.
    torch.nn.init.normal_(copy.gate.weight)
    assert not torch.allclose(copy(inputs), copy(moved))
    same_place = moved.clone()
    same_place[:, 2:] = inputs[:, 2:]
    torch.testing.assert_close(copy(same_place), copy(inputs))
    with pytest.raises(ValueError, match="choose one"):
        JointModel(encoders, ["original"], 2, 8, position_octaves=2, pattern_width=16)


WORLD_CHECK = Material((0.9, 0.7, 0.1), pattern=Pattern("check", 4.0, ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))))  # the paper kit's


def _check(x: torch.Tensor) -> torch.Tensor:
    """The scene kit's world check at points x [N, 3], as -1 and +1."""
    return torch.from_numpy(albedo(WORLD_CHECK, x.numpy())[:, 0]).float() * 2 - 1


@pytest.mark.slow  # 600 Adam steps
def test_a_pattern_field_repeats_a_check_it_learned_on_a_sphere_on_a_box_inside_it():
    # The paper kit's experiment without the rendering: the reference's big sphere wears the
    # check, and a target's box (the digger's body) sits inside it. A field made of waves carries
    # the check from the sphere onto the box's faces: well above chance, which is 0.5.
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    field = PatternField(32, 1, cycles=4.0)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(600):
        on_sphere = torch.nn.functional.normalize(torch.randn(1024, 3, generator=generator), dim=-1) * 0.65
        on_sphere += torch.tensor([0.0, 0.0, 0.1])
        loss = (field(on_sphere / 1.5).squeeze(1) - _check(on_sphere)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    size = torch.tensor([1.3, 0.8, 0.4])
    on_box = (torch.rand(8000, 3, generator=generator) - 0.5) * size
    axis = torch.randint(0, 3, (8000,), generator=generator)
    side = torch.randint(0, 2, (8000,), generator=generator) * 2 - 1
    on_box[torch.arange(8000), axis] = side * size[axis] / 2
    on_box += torch.tensor([0.0, 0.0, -0.1])
    with torch.no_grad():
        right = (field(on_box / 1.5).squeeze(1).sign() == _check(on_box)).float().mean().item()
    assert right > 0.7


class _Constant(torch.nn.Module):
    def forward(self, x, d):
        return torch.ones(x.shape[0]), torch.full((x.shape[0], 2), 0.25)


def test_principal_plane_of_features_in_three_dimensions():
    generator = torch.Generator().manual_seed(0)
    flat = torch.randn(500, 2, generator=generator) @ torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.5, 0.0]]) + torch.tensor([0.1, 0.2, 0.3])
    plane = FeaturePlane.of([flat[:200], flat[200:]], 3)
    torch.testing.assert_close(plane.axes.T @ plane.axes, torch.eye(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(plane.lift(plane.project(flat)), flat, atol=1e-4, rtol=0)  # the samples lie in the plane
    two = FeaturePlane.of([flat[:, :2]], 2)
    assert torch.equal(two.project(flat[:, :2]), flat[:, :2])


@pytest.mark.slow  # trains, and starts the CLI
@pytest.mark.parametrize(
    ("model", "train", "refused"),
    [
        ({"feature_dim": 3, "decoder_position": 2}, {"align": "moments", "align_weight": 0.1, "align_warmup_steps": 50}, "3, 2 and 0"),
        ({"pattern_field": 8}, {"desired_shape_features": False}, "2, 0 and 8"),
    ],
    ids=["align+position+dim3", "pattern-field+read-only"],
)
def test_a_run_with_the_options_trains_analyses_restyles_and_the_viewer_says_no(tiny_data, tmp_path, model, train, refused):
    config = tiny_config(tiny_data, tmp_path / "runs", model=model, train={"steps": 200, "log_every": 50, **train})
    path = write_config(config, tmp_path / "options.toml")
    result = run_cli("train", str(path), "--no-render", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    if "align" in train:
        assert all("align" in line and math.isfinite(line["align"]) for line in lines[1:])
    scores = json.loads((config.run_dir / "eval.json").read_text())
    assert scores["pairings"]["target:original"]["psnr"] > 15

    result = run_cli("analyze", str(config.run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    analysis = json.loads((config.run_dir / "analysis.json").read_text())
    dim = config.model.feature_dim
    assert len(analysis["fits"]["target"]["mean"]) == dim and math.isfinite(analysis["kl"]["symmetric"])
    if dim > 2:
        assert len(analysis["plane"]["axes"]) == dim and len(analysis["plane"]["axes"][0]) == 2

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
        f"error: {config.run_dir / 'config.toml'}: the viewer's feature plane needs model.feature_dim = 2, "
        f"model.decoder_position = 0 and model.pattern_field = 0 (this run: {refused}); eval, render and restyle work on it"
    ]


@pytest.mark.slow  # starts the CLI
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.align", '"kl"', "train.align"),
        ("train.align_weight", "-1.0", "train.align_weight: must be a finite number >= 0"),
        ("model.decoder_position", "11", "model.decoder_position: must be between 0 (off) and 10 octaves"),
        ("model.pattern_field", "-1", "model.pattern_field: must be between 0 (off) and 256 units"),
        ("model.pattern_cycles", "0.0", "model.pattern_cycles: must be a finite number > 0"),
    ],
)
def test_option_mistakes_are_one_line(tiny_data, tmp_path, key, value, message):
    name = key.split(".")[1]
    path = write_config(tiny_config(tiny_data, tmp_path / "runs"), tmp_path / "bad.toml")
    text, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", path.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1
    path.write_text(text)
    result = run_cli("train", str(path), cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr and not (tmp_path / "runs").exists()


@pytest.mark.slow  # starts the CLI
def test_pattern_fields_and_position_codes_are_one_or_the_other(tiny_data, tmp_path):
    path = write_config(tiny_config(tiny_data, tmp_path / "runs", model={"pattern_field": 8}), tmp_path / "both.toml")
    text, count = re.subn(r"^decoder_position = .*$", "decoder_position = 2", path.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1
    path.write_text(text)
    result = run_cli("train", str(path), cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "model.pattern_field: cannot be combined with model.decoder_position" in result.stderr
    assert not (tmp_path / "runs").exists()
