"""Networks: the spherical-harmonics basis, the decoders and the joint model's wiring."""

from __future__ import annotations

import math

import pytest
import torch

from fastjoint.config import ModelConfig
from fastjoint.model import JointModel
from fastjoint.model.encoding import spherical_harmonics, trunc_exp

AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)


def test_spherical_harmonics_are_orthonormal_on_the_sphere():
    generator = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(400_000, 3, generator=generator, dtype=torch.float64), dim=-1)
    basis = spherical_harmonics(dirs, 4)
    gram = basis.T @ basis * (4 * math.pi / len(dirs))  # Monte Carlo integral over the sphere
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


def test_trunc_exp_clamps_only_the_gradient():
    x = torch.tensor([0.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y.detach(), torch.exp(x.detach()))
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, torch.tensor([1.0, math.exp(15.0)]))


def test_query_shapes_and_ranges():
    torch.manual_seed(0)
    model = JointModel(ModelConfig(), AABB)
    x = torch.rand(100, 3) * 3 - 1.5
    d = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)
    result = model.query("target", "desired", x, d)
    assert result.sigma.shape == (100,) and torch.all(result.sigma > 0)
    assert result.rgb.shape == (100, 3) and torch.all((result.rgb > 0) & (result.rgb < 1))
    assert result.feature.shape == (100, 2) and torch.all(result.feature.abs() <= 1)
    torch.testing.assert_close(model.density("target", x), result.sigma)


def test_styles_share_the_feature_and_scenes_share_the_head():
    torch.manual_seed(0)
    model = JointModel(ModelConfig(), AABB)
    x = torch.rand(50, 3) * 3 - 1.5
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    original, desired = model.query("target", "original", x, d), model.query("target", "desired", x, d)
    torch.testing.assert_close(original.feature, desired.feature)
    assert not torch.allclose(original.rgb, desired.rgb)
    assert model.heads["target"] is model.heads["reference"]
    separate = JointModel(ModelConfig(share_head=False), AABB)
    assert separate.heads["target"] is not separate.heads["reference"]
    head_size = sum(p.numel() for p in model.heads["target"].parameters())
    assert sum(p.numel() for p in separate.parameters()) == sum(p.numel() for p in model.parameters()) + head_size


def test_grid_and_network_parameters_partition_the_model():
    model = JointModel(ModelConfig(), AABB)
    grid = {id(p) for p in model.grid_parameters()}
    network = {id(p) for p in model.network_parameters()}
    assert not grid & network and grid | network == {id(p) for p in model.parameters()}
