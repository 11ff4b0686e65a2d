"""tiny-cuda-nn's HashGrid as an optional backend (`backend.grid = "tcnn"`), in one place.

tinycudann is not on PyPI; it is built from source against a CUDA torch. It is imported
under `except (ImportError, OSError)`: without CUDA its import raises OSError.

Our table [n_params, F] is tiny-cuda-nn's flat parameter vector: its grid encoding stores
the levels one after another (its offset table is our `layout.offsets`, the same sizes
rounded up to a multiple of 8), each entry's F features contiguous
(`grid[(offset[level] + index) * F + feature]`). So either backend loads the other's
checkpoint through `table_to_tcnn_params` / `tcnn_params_to_table`, and the adapter below
runs tiny-cuda-nn on our table directly, so the module's parameter stays `table`.

tiny-cuda-nn computes the grid position as `input * scale + 0.5f`, which nvcc contracts into
one fused multiply-add; the reference rounds twice. Points within an ulp of a cell border
may therefore fall in the neighbouring cell: compare with a tolerance, not bit for bit.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

BUILD_HINT = "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch (needs CUDA and its toolkit)"


@functools.cache
def _import_problem() -> str | None:
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError) as error:
        return f"tinycudann is not importable ({type(error).__name__}); build it with: {BUILD_HINT}"
    return None


def tcnn_problem(device: torch.device) -> str | None:
    """Why tiny-cuda-nn's grid cannot run on `device`, or None when it can."""
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
