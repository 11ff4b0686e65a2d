"""train.style_smoothness: a penalty on how fast each desired style's change of colour varies across the feature plane."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import tiny_config, write_config
from fastjoint.config import load_config
from fastjoint.errors import UserError
from fastjoint.model.joint import JointModel
from fastjoint.train import SMOOTH_POINTS, SMOOTH_STEP, Trainer, plane_points, style_roughness


def _model() -> JointModel:
    torch.manual_seed(0)
    return JointModel(encoders={}, styles=["original", "relight"], feature_dim=2, decoder_hidden=32)


def test_plane_points_cover_the_plane_with_steps_of_one_length():
    points, steps = plane_points(2, torch.Generator().manual_seed(0), "cpu")
    assert points.shape == steps.shape == (SMOOTH_POINTS, 2)
    assert points.min() >= -1 and points.max() <= 1 and points.min() < -0.99 and points.max() > 0.99
    assert torch.allclose(steps.norm(dim=1), torch.full((SMOOTH_POINTS,), SMOOTH_STEP))


def test_roughness_is_the_squared_rate_of_the_style_change_and_trains_only_the_style_decoder():
    model = _model()
    points, steps = plane_points(2, torch.Generator().manual_seed(1), "cpu")
    roughness = style_roughness(model, ["relight"], points, steps)
    roughness.backward()
    assert all(p.grad is None for p in model.decoders["original"].parameters())  # the original is held fixed
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoders["relight"].parameters())

    # Against the derivative: the squared rate along each step is |J(u) e|^2 for the unit step e, where J is the
    # change's Jacobian at the point (a ReLU network is piecewise linear: a few steps cross a kink).
    def change(u: torch.Tensor) -> torch.Tensor:
        return model.decode("relight", u[None])[0] - model.decode("original", u[None])[0]

    jacobians = torch.func.vmap(torch.func.jacrev(change))(points)  # [N, 3, 2]
    unit = steps / steps.norm(dim=1, keepdim=True)
    expected = torch.einsum("nij,nj->ni", jacobians, unit).square().sum(dim=1).mean()
    assert roughness.item() == pytest.approx(expected.item(), rel=0.02)
    assert roughness.item() > 1e-4  # two independently initialised decoders differ

    # A style decoder that is the original's copy changes nothing, anywhere: no roughness.
    model.decoders["relight"].load_state_dict(model.decoders["original"].state_dict())
    assert style_roughness(model, ["relight"], points, steps).item() == pytest.approx(0.0, abs=1e-12)


def test_style_smoothness_is_checked_in_one_line(tiny_data, tmp_path):
    text = write_config(tiny_config(tiny_data, tmp_path), tmp_path / "c.toml").read_text()
    changed, count = re.subn(r"^style_smoothness = .*$", "style_smoothness = -0.001", text, flags=re.MULTILINE)
    assert count == 1
    (tmp_path / "negative.toml").write_text(changed)
    with pytest.raises(UserError, match=r"train.style_smoothness'?:? must not be negative"):
        load_config(tmp_path / "negative.toml")


def test_training_with_the_penalty_smooths_the_style_change(tiny_data, tmp_path):
    def roughness_after(weight: float) -> float:
        config = tiny_config(tiny_data, tmp_path, name=f"w{weight}", train={"steps": 30, "style_smoothness": weight, "cover_weight": 0.0})
        with Trainer(config) as trainer:
            for _ in range(30):
                trainer.train_step()
            points, steps = plane_points(2, torch.Generator().manual_seed(3), "cpu")
            with torch.no_grad():
                return style_roughness(trainer.model, ["recolour"], points, steps).item()

    smooth, free = roughness_after(1.0), roughness_after(0.0)
    assert smooth < 0.5 * free, (smooth, free)
