"""The card's small networks (Mlp) and tiny-cuda-nn's fully fused MLP as their optional backend.

tiny-cuda-nn runs only on CUDA with tinycudann installed. Here, everywhere, the packing of our
Linear layers into its flat parameter vector is checked against a statement of what its
network computes from that vector (`fused_network`: its identity encoding pads the input with
ones to a multiple of 16, then bias-free row-major matrices with ReLU between them); where it
is installed, its own network is checked against our PyTorch one.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from conftest import CUDA, TCNN, TCNN_RUNS, fresh_seed
from fastjoint.architecture import architecture, build_model
from fastjoint.config import BackendConfig, Config, DataConfig, ModelConfig, StyleData
from fastjoint.errors import UserError
from fastjoint.model.mlp import Mlp
from fastjoint.ops import PURE_TORCH, resolve_backends
from fastjoint.ops.tcnn import ALIGNMENT, fused_width, mlp_to_tcnn_params, tcnn_input_dims, tcnn_mlp_problem


def padded(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def fused_network(params: Tensor, x: Tensor, n_outputs: int, width: int, hidden_layers: int) -> Tensor:
    """What tiny-cuda-nn's Network(tcnn_input_dims(n), n_outputs, FullyFusedMLP) computes from `params`."""
    declared = tcnn_input_dims(x.shape[1])
    if declared > x.shape[1]:
        x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=-1)  # what TcnnMlp feeds it
    x = torch.cat([x, x.new_ones(x.shape[0], padded(declared) - declared)], dim=-1)  # its identity encoding's padding
    shapes = [(width, padded(declared))] + [(width, width)] * (hidden_layers - 1) + [(padded(n_outputs), width)]
    assert params.numel() == sum(rows * cols for rows, cols in shapes)
    matrices = torch.split(params, [rows * cols for rows, cols in shapes])
    h = x
    for i, (flat, shape) in enumerate(zip(matrices, shapes)):
        h = h @ flat.view(shape).T
        if i < len(shapes) - 1:
            h = h.relu()
    return h[:, :n_outputs]


@pytest.mark.parametrize(
    "n_inputs, hidden, hidden_layers, n_outputs",
    [(2, 32, 1, 3), (16, 64, 1, 16), (32, 64, 1, 16), (19, 32, 2, 3), (2, 32, 3, 3), (48, 127, 2, 17)],
)
def test_packing_computes_our_mlp(n_inputs, hidden, hidden_layers, n_outputs):
    """Values and gradients: a multiple-of-16 input (its own column of ones), inner biases on the carrier neuron."""
    generator = torch.Generator().manual_seed(fresh_seed())
    torch.manual_seed(generator.initial_seed())
    mlp = Mlp.of_widths([n_inputs] + [hidden] * hidden_layers + [n_outputs]).double()
    with torch.no_grad():
        for parameter in mlp.parameters():  # biases as large as weights, so a misplaced one shows
            parameter.uniform_(-1.0, 1.0, generator=generator)
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    width = fused_width(hidden, hidden_layers)
    x = torch.rand(37, n_inputs, generator=generator, dtype=torch.float64) * 2 - 1

    ours = mlp(x)
    theirs = fused_network(mlp_to_tcnn_params(linears, width), x, n_outputs, width, hidden_layers) + linears[-1].bias
    torch.testing.assert_close(theirs, ours, rtol=1e-12, atol=1e-12)
    assert ours.abs().max() > 0.1  # not a comparison of zeros

    v_out = torch.randn(ours.shape, generator=generator, dtype=torch.float64)
    v_ours = torch.autograd.grad(ours, list(mlp.parameters()), v_out)
    v_theirs = torch.autograd.grad(theirs, list(mlp.parameters()), v_out)
    for name, a, b in zip([n for n, _ in mlp.named_parameters()], v_theirs, v_ours):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"v_{name}: {m}")


def test_first_call_check_refuses_a_network_that_differs():
    """Mlp checks tiny-cuda-nn's network once against its own forward; here the transcription stands in for it."""
    mlp = Mlp.of_widths([2, 32, 3])
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]

    def transcription(x: Tensor, linears: list[torch.nn.Linear], shift: float = 0.0) -> Tensor:
        return fused_network(mlp_to_tcnn_params(linears, 32).half().float(), x, 3, 32, 1) + linears[-1].bias + shift

    mlp._check_tcnn(transcription, linears)  # fp16 weights: within the check's tolerance
    with pytest.raises(RuntimeError, match="backend.mlp = tcnn: tiny-cuda-nn's network differs"):
        mlp._check_tcnn(lambda x, linears: transcription(x, linears, shift=0.05), linears)


def test_fused_widths():
    assert [fused_width(h, 1) for h in (1, 16, 17, 64, 128, 129)] == [16, 16, 32, 64, 128, None]
    assert [fused_width(h, 2) for h in (15, 16, 64, 127, 128)] == [16, 32, 128, 128, None]  # one neuron carries the biases


def test_too_wide_names_the_key():
    problem = tcnn_mlp_problem(torch.device("cpu"), {"model.decoder_hidden": (32, 1), "model.hidden": (256, 1)})
    assert problem.startswith("model.hidden = 256 is wider") and "128 units" in problem
    assert "127 units" in tcnn_mlp_problem(torch.device("cpu"), {"model.decoder_hidden": (128, 2)})


def test_auto_runs_pytorch_on_the_cpu_without_a_word(capsys):
    assert resolve_backends(BackendConfig(), torch.device("cpu"), {"model.hidden": (64, 1)}).mlp == "torch"
    assert capsys.readouterr().err == ""


def test_naming_tcnn_where_it_cannot_run_is_one_line():
    if TCNN_RUNS:
        pytest.skip("tinycudann is installed and CUDA present")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match='backend.mlp = "tcnn" cannot run here') as caught:
        resolve_backends(BackendConfig(mlp="tcnn"), device, {"model.hidden": (64, 1)})
    assert "\n" not in str(caught.value)


def demo_like_config(encoder: str = "hashgrid") -> Config:
    data = DataConfig(target="t", reference="r", styles={"desired": StyleData("rd")})
    return Config(data=data, model=ModelConfig(encoder=encoder))


@pytest.mark.parametrize("encoder", ["hashgrid", "mlp"])
def test_checkpoints_are_the_same_under_either_backend(encoder):
    """The parameters are our Linear layers whichever backend runs them (a tcnn model builds lazily, so here too)."""
    config = demo_like_config(encoder)
    torch.manual_seed(0)
    ours = build_model(config).state_dict()
    torch.manual_seed(0)
    model = build_model(config, PURE_TORCH._replace(mlp="tcnn"))
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ours.items()}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ours.items())
    mlps = [m for m in model.modules() if isinstance(m, Mlp)]
    assert mlps and all(m.backend == "tcnn" for m in mlps)
    assert model.new_decoder().net.backend == "tcnn"  # restyle's decoders run on it too
    assert set(architecture(config).mlp_shapes(config)) == (
        {"model.hidden", "model.decoder_hidden"} if encoder == "hashgrid" else {"model.decoder_hidden"}
    )


@CUDA
@TCNN
@pytest.mark.parametrize("hidden_layers", [1, 2])
def test_tcnn_matches_pytorch(hidden_layers):
    """tiny-cuda-nn's network on our weights: outputs and gradients within fp16's precision.

    It computes in fp16 (inputs, weights and, in its fused MLP, the products), so each value
    carries a relative error of a few 1e-3; over 64 accumulated products, 1e-2 is the bound.
    """
    generator = torch.Generator().manual_seed(fresh_seed())
    torch.manual_seed(generator.initial_seed())
    for n_inputs in (2, 32):  # 32: our own column of ones
        reference = Mlp.of_widths([n_inputs] + [64] * hidden_layers + [16]).cuda()
        fused = Mlp.of_widths([n_inputs] + [64] * hidden_layers + [16], backend="tcnn").cuda()
        fused.load_state_dict(reference.state_dict())
        x = (torch.rand(5000, n_inputs, generator=generator) * 2 - 1).cuda().requires_grad_()  # the feature net's input needs one
        ours, theirs = reference(x), fused(x)
        assert theirs.dtype == torch.float32 and theirs.shape == ours.shape
        torch.testing.assert_close(theirs, ours, rtol=1e-2, atol=1e-2)
        v_out = torch.randn(ours.shape, generator=generator).cuda()
        v_ours = torch.autograd.grad(ours, [x, *reference.parameters()], v_out)
        v_theirs = torch.autograd.grad(theirs, [x, *fused.parameters()], v_out)
        for a, b in zip(v_theirs, v_ours):
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2 * b.abs().max().item())
