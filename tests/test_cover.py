"""The cover term: the target's surface features pulled toward the reference's early in training."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import run_cli, tiny_config, write_config
from fastjoint.config import load_config
from fastjoint.errors import UserError
from fastjoint.pairing import Pairing
from fastjoint.train import COVER_MIN_POINTS, Trainer, cover_term


def test_the_cover_term_trains_the_first_sixth_of_the_steps_unless_told(tiny_data, tmp_path):
    assert tiny_config(tiny_data, tmp_path, train={"steps": 1500}).train.cover_steps == 250
    assert tiny_config(tiny_data, tmp_path, train={"steps": 300}).train.cover_steps == 50
    assert tiny_config(tiny_data, tmp_path, train={"steps": 300, "cover_until_step": 120}).train.cover_steps == 120
    assert tiny_config(tiny_data, tmp_path, train={"steps": 300, "cover_until_step": 0}).train.cover_steps == 0


def test_cover_term_is_the_mean_squared_distance_to_the_nearest_reference_feature():
    reference = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]] * 3, requires_grad=True)
    target = torch.tensor([[0.1, 0.0], [1.0, 0.3], [-0.2, 1.0], [0.5, 0.5]] * 2, requires_grad=True)
    expected = torch.tensor([0.1**2, 0.3**2, 0.2**2, 0.5]).mean()
    term = cover_term(target, reference)
    assert term is not None and term.item() == pytest.approx(expected.item(), rel=1e-5)
    term.backward()
    assert reference.grad is None  # the reference is held fixed
    assert target.grad is not None and target.grad.abs().sum() > 0
    # Points already on the reference cost nothing.
    assert cover_term(reference.detach()[:COVER_MIN_POINTS], reference.detach()).item() == pytest.approx(0.0, abs=1e-6)
    # A batch that barely sees a surface gets no term.
    assert cover_term(target[: COVER_MIN_POINTS - 1], reference) is None
    assert cover_term(target, reference[: COVER_MIN_POINTS - 1]) is None


def test_cover_settings_are_checked_in_one_line(tiny_data, tmp_path):
    text = write_config(tiny_config(tiny_data, tmp_path), tmp_path / "c.toml").read_text()
    for key, value, problem in (
        ("cover_weight", "-0.1", "must not be negative"),
        ("cover_until_step", "-1", "must be"),
        ("cover_until_step", '"soon"', 'must be an integer or one of "auto"'),
    ):
        path = tmp_path / f"{key}{value.strip(chr(34))}.toml"
        changed, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.MULTILINE)
        assert count == 1
        path.write_text(changed)
        with pytest.raises(UserError, match=f"train.{key}'?:? {re.escape(problem)}"):
            load_config(path)


@pytest.mark.slow
def test_the_cover_term_trains_its_steps_and_pulls_the_target_toward_the_reference(tiny_data, tmp_path):
    def trained(weight: float, name: str) -> tuple[list, float]:
        config = tiny_config(tiny_data, tmp_path, name=name, train={"steps": 200, "cover_weight": weight, "cover_until_step": 150})
        with Trainer(config) as trainer:
            stats = [trainer.train_step() for _ in range(200)]
            # The same fixed batch of each scene's training rays, after training: how far the
            # target's surface features lie from the reference's.
            generator = torch.Generator().manual_seed(7)
            features = {}
            for scene in ("target", "reference"):
                pairing = Pairing(scene, "original")
                rays_o, rays_d, _ = trainer.rays[pairing].sample(4096, generator)
                with torch.no_grad():
                    result = trainer.built.render_rays(pairing, rays_o, rays_d, torch.ones(3))
                    features[scene] = trainer._surface_logits(scene, rays_o, rays_d, result).tanh()
            with torch.no_grad():
                distance = cover_term(features["target"], features["reference"])
        return stats, float(distance)

    stats, covered = trained(5.0, "cover")
    # (The first few dozen steps of a fresh model see too few opaque rays for a term.)
    assert all(s.cover is not None for s in stats[100:150]) and all(s.cover is None for s in stats[150:])
    off_stats, uncovered = trained(0.0, "off")
    assert all(s.cover is None for s in off_stats)
    assert covered < 0.5 * uncovered, (covered, uncovered)


@pytest.mark.slow
def test_metrics_log_the_cover_term_while_it_trains(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "runs", train={"steps": 20, "log_every": 5, "checkpoint_every": 10, "cover_until_step": 10})
    result = run_cli("train", str(write_config(config, tmp_path / "tiny.toml")), "--no-eval", "--no-render", "--orbit", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [("loss/cover" in line) for line in lines] == [True, True, False, False]
    assert all(line["loss/cover"] >= 0 for line in lines[:2])
