"""Networks: the spherical-harmonics basis, the decoders and the joint model's wiring."""

from __future__ import annotations

import math

import torch

from fastjoint.architecture import architecture, build_model
from fastjoint.config import Config, DataConfig, ModelConfig, StyleData
from fastjoint.model import HashGrid, JointModel
from fastjoint.model.encoding import spherical_harmonics, trunc_exp


def model_of(**model) -> JointModel:
    """A freshly built model with one desired style, `desired` (the data paths are not read)."""
    return build_model(config_of(**model))


def config_of(**model) -> Config:
    data = DataConfig(target="t", reference="r", styles={"desired": StyleData("rd")})
    return Config(data=data, model=ModelConfig(**model))


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
    model = model_of()
    x = torch.rand(100, 3) * 3 - 1.5
    d = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)
    result = model.query("target", "desired", x, d)
    assert result.sigma.shape == (100,) and torch.all(result.sigma > 0)
    assert result.rgb.shape == (100, 3) and torch.all((result.rgb > 0) & (result.rgb < 1))
    assert result.feature.shape == (100, 2) and torch.all(result.feature.abs() <= 1)
    torch.testing.assert_close(model.density("target", x), result.sigma)


def test_styles_share_the_feature_and_scenes_share_the_head():
    torch.manual_seed(0)
    model = model_of()
    x = torch.rand(50, 3) * 3 - 1.5
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    original, desired = model.query("target", "original", x, d), model.query("target", "desired", x, d)
    torch.testing.assert_close(original.feature, desired.feature)
    assert not torch.allclose(original.rgb, desired.rgb)
    assert model.encoders["target"].head is model.encoders["reference"].head
    separate = model_of(share_head=False)
    assert separate.encoders["target"].head is not separate.encoders["reference"].head
    head_size = sum(p.numel() for p in model.encoders["target"].head.parameters())
    assert sum(p.numel() for p in separate.parameters()) == sum(p.numel() for p in model.parameters()) + head_size


def test_optimizer_groups_partition_the_model():
    config = config_of()
    model = build_model(config)
    tables, networks = architecture(config).optimizer(model, config).param_groups
    assert [id(p) for p in tables["params"]] == [id(m.table) for m in model.modules() if isinstance(m, HashGrid)]
    assert tables["weight_decay"] == 0.0 and networks["weight_decay"] == config.train.weight_decay
    grid, network = {id(p) for p in tables["params"]}, {id(p) for p in networks["params"]}
    assert len(grid) == 2 and not grid & network and grid | network == {id(p) for p in model.parameters()}


def test_mlp_baseline_is_the_research_codes_network():
    from fastjoint.model.nerf_mlp import positional_encoding

    x = torch.tensor([[0.5, -1.0, 2.0]])
    encoded = positional_encoding(x, 10)
    assert encoded.shape == (1, 63)
    torch.testing.assert_close(encoded[0, 3 + 3 * 9 : 3 + 3 * 10], torch.sin(x[0] * 2**9))  # sin at 2^9
    config = config_of(encoder="mlp", decoder_normal=False)  # the research code's decoders read the feature alone
    model = build_model(config)
    encoder = model.encoders["target"]
    widths = [(layer.in_features, layer.out_features) for layer in encoder.layers]
    assert widths == [(63, 256)] + [(256, 256)] * 4 + [(256 + 63, 256)] + [(256, 256)] * 2  # skip after layer 4
    assert (encoder.view_layer.in_features, encoder.feature_out.out_features) == (256 + 27, 2)
    decoder = [(m.in_features, m.out_features) for m in model.decoders["desired"].net if isinstance(m, torch.nn.Linear)]
    assert decoder == [(2, 32), (32, 32), (32, 3)]  # the intended 2 -> 32 -> 32 -> 3
    assert not any(isinstance(m, HashGrid) for m in model.modules())
    assert model.encoders["target"] is not model.encoders["reference"]
    assert len(architecture(config).optimizer(model, config).param_groups) == 1
    d = torch.nn.functional.normalize(torch.randn(20, 3), dim=-1)
    result = model.query("reference", "original", torch.rand(20, 3), d)
    assert torch.all(result.sigma >= 0) and result.feature.abs().max() <= 1


class _Ball(torch.nn.Module):
    """An encoder stand-in whose log density falls linearly away from the origin: a ball, outward normal x / |x|."""

    box_side = 2.0

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 - 4.0 * x.norm(dim=1)


def test_decoders_read_the_outward_normal_where_dense_and_none_where_faint():
    from fastjoint.model.joint import NORMAL_MIN_SIGMA, dense_normals

    generator = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(64, 3, generator=generator), dim=1) * 0.7
    sigma = _Ball().log_density(x).exp()
    sigma[::2] = NORMAL_MIN_SIGMA * 0.5  # every other point faint
    normal = dense_normals(_Ball(), x, sigma)
    torch.testing.assert_close(normal[1::2], x[1::2] / 0.7, atol=2e-3, rtol=0)  # central differences: O(step^2) on the curve
    assert torch.equal(normal[::2], torch.zeros_like(normal[::2]))


def test_the_decoders_read_the_normal_by_default_and_the_feature_alone_without():
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    x = torch.rand(50, 3) * 2 - 1
    for normal, width in ((True, 5), (False, 2)):
        model = build_model(config_of(decoder_normal=normal))
        assert model.decoder_inputs == width and model.decoders["desired"].inputs == width
        result = model.query("target", "desired", x, d)
        sigma, feature = model.features("target", x, d)
        inputs = model.decoder_input("target", x, sigma, feature)
        assert inputs.shape == (50, width)
        torch.testing.assert_close(result.rgb, model.decode("desired", inputs))
        assert model.on_plane(feature).shape == (50, width)


def test_no_dense_sample_reads_no_normal_with_either_encoder():
    """A batch with no sample past NORMAL_MIN_SIGMA (early in training, or empty space) reads zero normals, with
    either encoder (the research code's once failed on the empty batch of normals this asks it for)."""
    from fastjoint.model.joint import dense_normals

    for encoder in ("hashgrid", "mlp"):
        model = build_model(config_of(encoder=encoder))
        x = torch.rand(7, 3)
        normal = dense_normals(model.encoders["target"], x, torch.zeros(7))
        assert torch.equal(normal, torch.zeros(7, 3)), encoder
