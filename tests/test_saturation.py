"""The saturation penalty: the style features' logits held where their tanh still passes gradient."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import tiny_config, write_config
from fastjoint.architecture import build_model
from fastjoint.config import Config, DataConfig, ModelConfig, StyleData, load_config
from fastjoint.errors import UserError
from fastjoint.pairing import Pairing
from fastjoint.train import FEATURE_BOUND, Trainer, feature_saturation


def test_saturation_is_zero_inside_the_bound_and_the_squared_excess_outside():
    inside = torch.tensor([[0.0, 0.0], [FEATURE_BOUND, -FEATURE_BOUND], [-1.5, 1.9]])
    assert feature_saturation(inside).item() == 0.0
    logits = torch.tensor(
        [[FEATURE_BOUND + 1.0, 0.0], [0.0, -FEATURE_BOUND - 2.0], [FEATURE_BOUND + 0.5, FEATURE_BOUND + 0.5]], requires_grad=True
    )
    expected = (1.0 + 4.0 + 2 * 0.25) / 3
    value = feature_saturation(logits)
    assert value.item() == pytest.approx(expected)
    value.backward()
    # Gradient descent moves each logit beyond the bound back toward it, and leaves the others alone.
    assert logits.grad[0, 0] > 0 and logits.grad[1, 1] < 0 and logits.grad[2].gt(0).all()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0


@pytest.mark.parametrize("encoder", ["hashgrid", "mlp"])
def test_the_feature_is_the_tanh_of_its_logits(encoder):
    config = Config(data=DataConfig(target="t", reference="r", styles={"desired": StyleData("rd")}), model=ModelConfig(encoder=encoder))
    torch.manual_seed(0)
    model = build_model(config)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(257, 3, generator=generator) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(257, 3, generator=generator), dim=1)
    with torch.no_grad():
        _, feature = model.features("target", x, d)
        logits = model.feature_logits("target", x, d)
    torch.testing.assert_close(logits.tanh(), feature)
    assert not torch.equal(logits, feature)


def test_saturation_weight_is_checked_in_one_line(tiny_data, tmp_path):
    text = write_config(tiny_config(tiny_data, tmp_path), tmp_path / "c.toml").read_text()
    changed, count = re.subn(r"^saturation_weight = .*$", "saturation_weight = -1.0", text, flags=re.MULTILINE)
    assert count == 1
    path = tmp_path / "negative.toml"
    path.write_text(changed)
    with pytest.raises(UserError, match=r"train.saturation_weight'?:? must not be negative") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_the_penalty_keeps_the_features_from_saturating(tiny_data, tmp_path):
    """Without the penalty the tiny analogy's surface features pile up where the tanh is flat; with it they do not."""

    def saturated_share(weight: float) -> float:
        config = tiny_config(tiny_data, tmp_path, name=f"s{weight}", train={"steps": 150, "saturation_weight": weight})
        with Trainer(config) as trainer:
            for _ in range(150):
                trainer.train_step()
            generator = torch.Generator().manual_seed(7)
            shares = []
            for scene in ("target", "reference"):
                pairing = Pairing(scene, "original")
                rays_o, rays_d, _ = trainer.rays[pairing].sample(4096, generator)
                with torch.no_grad():
                    result = trainer.built.render_rays(pairing, rays_o, rays_d, torch.ones(3))
                    logits = trainer._surface_logits(scene, rays_o, rays_d, result)
                assert logits.shape[0] > 100
                shares.append((logits.abs() > FEATURE_BOUND + 0.5).any(dim=1).float().mean().item())
        return max(shares)

    off, on = saturated_share(0.0), saturated_share(1.0)
    assert off > 0.3, off  # the case the penalty is for
    assert on < 0.05, (on, off)
