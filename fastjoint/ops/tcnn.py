"""tiny-cuda-nn as an optional backend, in one place: its HashGrid (`backend.grid = "tcnn"`)
and its fully fused MLP (`backend.mlp = "tcnn"`).

tinycudann is not on PyPI; it is built from source against a CUDA torch. It is imported
under `except (ImportError, OSError)`: without CUDA its import raises OSError.

Our table [n_params, F] is tiny-cuda-nn's flat parameter vector: its grid encoding stores
the levels one after another (its offset table is our `layout.offsets`, the same sizes
rounded up to a multiple of 8), each entry's F features contiguous
(`grid[(offset[level] + index) * F + feature]`). So either backend loads the other's
checkpoint through `table_to_tcnn_params` / `tcnn_params_to_table`, and the adapter below
runs tiny-cuda-nn on our table directly, so the module's parameter stays `table`.

Its MLPs have no biases and run in fp16; `mlp_to_tcnn_params` maps ours onto one of its
networks (see there), so the parameters stay our nn.Linear layers under either backend.

tiny-cuda-nn computes the grid position as `input * scale + 0.5f`, which nvcc contracts into
one fused multiply-add; the reference rounds twice. Points within an ulp of a cell border
may therefore fall in the neighbouring cell: compare with a tolerance, not bit for bit.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

BUILD_HINT = "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch (needs CUDA and its toolkit)"


@functools.cache
def _import_problem() -> str | None:
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError) as error:
        return f"tinycudann is not importable ({type(error).__name__}); build it with: {BUILD_HINT}"
    return None


def tcnn_problem(device: torch.device) -> str | None:
    """Why tiny-cuda-nn cannot run on `device`, or None when it can."""
    if device.type != "cuda":
        return f"tiny-cuda-nn needs CUDA (device is {device.type})"
    return _import_problem()


def encoding_config(n_levels: int, features_per_level: int, log2_table_size: int, base_resolution: int, per_level_scale: float) -> dict:
    """tiny-cuda-nn's encoding config for the grid our `grid_layout` describes."""
    return {
        "otype": "HashGrid",
        "n_levels": n_levels,
        "n_features_per_level": features_per_level,
        "log2_hashmap_size": log2_table_size,
        "base_resolution": base_resolution,
        "per_level_scale": per_level_scale,
        "interpolation": "Linear",
    }


def table_to_tcnn_params(table: Tensor) -> Tensor:  # [n_params, F] -> [n_params * F]
    """Our table as tiny-cuda-nn's flat parameter vector (a view when contiguous)."""
    assert table.dim() == 2, f"table must be [n_params, F], got {tuple(table.shape)}"
    return table.reshape(-1)


def tcnn_params_to_table(params: Tensor, features_per_level: int) -> Tensor:  # [n_params * F] -> [n_params, F]
    """tiny-cuda-nn's flat parameter vector as our table."""
    assert params.dim() == 1 and params.numel() % features_per_level == 0, (
        f"params must be [n_params * {features_per_level}], got {tuple(params.shape)}"
    )
    return params.reshape(-1, features_per_level)


class TcnnHashGrid:
    """Runs tiny-cuda-nn's HashGrid on a table owned by the caller.

    Not an nn.Module on purpose: the tcnn module's own parameters are never used (the
    caller's table is substituted for them in each call), so they must not reach a
    state_dict or an optimiser. Outputs come back as float32, unpadded.
    """

    def __init__(self, config: dict, device: torch.device) -> None:
        import tinycudann

        with torch.cuda.device(device):
            self.encoding = tinycudann.Encoding(n_input_dims=3, encoding_config=config, dtype=torch.float32)

    def __call__(self, x: Tensor, table: Tensor) -> Tensor:  # [N, 3], [n_params, F] -> [N, L * F]
        expected = self.encoding.params.numel()
        assert table.numel() == expected, f"table holds {table.numel()} values, tiny-cuda-nn expects {expected}"
        params = {"params": table_to_tcnn_params(table)}
        return torch.func.functional_call(self.encoding, params, (x.float().contiguous(),)).float()


FUSED_WIDTHS = (16, 32, 64, 128)
"""The neuron counts tiny-cuda-nn's FullyFusedMLP is compiled for."""
ALIGNMENT = 16
"""tiny-cuda-nn pads the network's input (with ones) and output (with zeros) to a multiple of this."""


def _padded(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def fused_width(hidden: int, hidden_layers: int) -> int | None:
    """The FullyFusedMLP width that runs an MLP of `hidden_layers` layers of `hidden` units, None if none does.

    With more than one hidden layer one neuron more is needed: it carries the constant 1
    that stands in for the inner layers' biases (see `mlp_to_tcnn_params`).
    """
    needed = hidden + (hidden_layers > 1)
    return next((width for width in FUSED_WIDTHS if width >= needed), None)


def tcnn_mlp_problem(device: torch.device, shapes: dict[str, tuple[int, int]]) -> str | None:
    """Why tiny-cuda-nn's fused MLP cannot run our networks on `device`, or None when it can.

    Args:
        shapes: config key -> (hidden units, hidden layers) of the networks it would run.
    """
    for key, (hidden, layers) in shapes.items():
        if fused_width(hidden, layers) is None:
            return f"{key} = {hidden} is wider than tiny-cuda-nn's fused MLP runs ({FUSED_WIDTHS[-1] - (layers > 1)} units at most here)"
    return tcnn_problem(device)


def network_config(width: int, hidden_layers: int) -> dict:
    """tiny-cuda-nn's network config: ReLU hidden layers, linear output."""
    return {
        "otype": "FullyFusedMLP",
        "activation": "ReLU",
        "output_activation": "None",
        "n_neurons": width,
        "n_hidden_layers": hidden_layers,
    }


def tcnn_input_dims(n_inputs: int) -> int:
    """The input width we declare to tiny-cuda-nn: ours, plus a column of ones where its padding adds none."""
    return n_inputs + (n_inputs % ALIGNMENT == 0)


def fused_matrix_shapes(n_inputs: int, n_outputs: int, width: int, hidden_layers: int) -> list[tuple[int, int]]:
    """The shapes of FullyFusedMLP's weight matrices, in the order its flat parameter vector holds them."""
    return [(width, _padded(tcnn_input_dims(n_inputs)))] + [(width, width)] * (hidden_layers - 1) + [(_padded(n_outputs), width)]


def mlp_to_tcnn_params(linears: list[nn.Linear], width: int) -> Tensor:  # -> [n_params], the weights' dtype
    """Our MLP (Linear, ReLU, ..., Linear) as tiny-cuda-nn's flat parameter vector, differentiably.

    tiny-cuda-nn's network is its identity encoding (the input, padded to a multiple of 16 with
    ones) followed by bias-free row-major weight matrices, one after another: [width, padded
    inputs], [width, width] per further hidden layer, [padded outputs, width]. Our units take
    the first rows; the rest stay zero and so output zero through ReLU. The biases ride on
    constants:
    - the first layer's on the input's first padding column, which is 1 (`tcnn_input_dims`
      adds that column where the padding has none);
    - an inner layer's on a carrier neuron, the one after our units, which the first layer
      sets to 1 from that same column and each inner layer passes on;
    - the last layer's is added by the caller (`TcnnMlp`) after the network.
    Gradients flow back to the Linear layers through this packing; the constants get none.
    """
    first, last = linears[0], linears[-1]
    hidden, n_inputs = first.weight.shape
    ones = n_inputs  # the column of ones
    carrier = hidden  # used only with inner layers
    assert width >= hidden + (len(linears) > 2), f"width {width} cannot hold {hidden} units"
    shapes = fused_matrix_shapes(n_inputs, last.weight.shape[0], width, len(linears) - 1)
    matrices = [first.weight.new_zeros(shape) for shape in shapes]
    matrices[0][:hidden, :n_inputs] = first.weight
    matrices[0][:hidden, ones] = first.bias
    if len(linears) > 2:
        matrices[0][carrier, ones] = 1.0
    for inner, matrix in zip(linears[1:-1], matrices[1:-1]):
        assert inner.weight.shape == (hidden, hidden), f"hidden layers must all be {hidden} wide, got {tuple(inner.weight.shape)}"
        matrix[:hidden, :hidden] = inner.weight
        matrix[:hidden, carrier] = inner.bias
        matrix[carrier, carrier] = 1.0
    matrices[-1][: last.weight.shape[0], :hidden] = last.weight
    return torch.cat([m.flatten() for m in matrices])


class TcnnMlp:
    """Runs tiny-cuda-nn's fully fused MLP with the weights of our Linear layers.

    Not an nn.Module, as TcnnHashGrid: the tcnn module's own parameters are never used.
    Outputs come back as float32.
    """

    def __init__(self, n_inputs: int, n_outputs: int, hidden: int, hidden_layers: int, device: torch.device) -> None:
        import tinycudann

        self.n_inputs = n_inputs
        self.width = fused_width(hidden, hidden_layers)
        assert self.width is not None, f"no fused MLP runs {hidden_layers} layers of {hidden} units"
        with torch.cuda.device(device):
            self.network = tinycudann.Network(tcnn_input_dims(n_inputs), n_outputs, network_config(self.width, hidden_layers))
        expected = sum(rows * cols for rows, cols in fused_matrix_shapes(n_inputs, n_outputs, self.width, hidden_layers))
        if self.network.params.numel() != expected:  # e.g. a build for GPUs older than Turing runs CutlassMLP, laid out otherwise
            raise RuntimeError(f"tiny-cuda-nn built a network of {self.network.params.numel()} parameters, not FullyFusedMLP's {expected}")

    def __call__(self, x: Tensor, linears: list[nn.Linear]) -> Tensor:  # [N, n_inputs] -> [N, n_outputs]
        assert x.shape[-1] == self.n_inputs, f"expected [N, {self.n_inputs}] inputs, got {tuple(x.shape)}"
        if tcnn_input_dims(self.n_inputs) > self.n_inputs:
            x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=-1)
        params = {"params": mlp_to_tcnn_params(linears, self.width).half()}
        out = torch.func.functional_call(self.network, params, (x.float().contiguous(),))
        return out.float() + linears[-1].bias
