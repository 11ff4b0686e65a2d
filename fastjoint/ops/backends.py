"""Choosing the implementation of each op: `auto | <name> | torch` from the config.

`auto` takes the fastest backend available on the device and, when it has to fall back,
says so in one line. Naming a backend that cannot run is a UserError saying how to get it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch

from fastjoint.errors import UserError
from fastjoint.log import warn_once
from fastjoint.ops import native
from fastjoint.ops.tcnn import tcnn_mlp_problem, tcnn_problem


class Backends(NamedTuple):
    grid: str
    march: str
    composite: str
    mlp: str


PURE_TORCH = Backends(grid="torch", march="torch", composite="torch", mlp="torch")
"""The PyTorch references of every op: what runs anywhere."""


@functools.cache
def nerfacc_cuda_problem() -> str | None:
    """Why nerfacc's CUDA kernels cannot run here, or None when they can.

    Importing nerfacc's backend builds its kernels on first use (minutes, once).
    """
    if not torch.cuda.is_available():
        return "needs CUDA"
    try:
        from nerfacc.cuda._backend import _C
    except Exception as error:  # a failed JIT build raises many kinds of errors
        return f"its CUDA kernels failed to build ({type(error).__name__}: {error})".splitlines()[0]
    if _C is None:
        return "its CUDA kernels are unavailable (no CUDA toolkit found)"
    return None


def _resolve(key: str, requested: str, problems: dict[str, Callable[[], str | None]], fastest_first: list[str]) -> str:
    """Picks a backend; `problems` maps each name to a check giving None (usable) or why not.

    Only the checks needed are run: building a native backend nobody asked for costs minutes.
    """
    if requested != "auto":
        problem = problems[requested]()
        if problem is not None:
            raise UserError(f'{key} = "{requested}" cannot run here: {problem}')
        return requested
    for name in fastest_first:
        if name == fastest_first[0]:
            best_problem = problems[name]()
            if best_problem is None:
                return name
        elif problems[name]() is None:
            warn_once(f"{key}: {fastest_first[0]} {best_problem}; using {name} (slower)")
            return name
    raise AssertionError(f"no usable backend for {key}")


def _usable() -> None:
    return None


def resolve_backends(config, device: torch.device, mlp_shapes: Mapping[str, tuple[int, int]] | None = None) -> Backends:
    """Resolves `config` (a BackendConfig) for `device`.

    Backends named explicitly are checked first, so a named one that cannot run ends the
    run with its one-line error before any `auto` fallback has printed a warning.

    Args:
        mlp_shapes: config key -> (hidden units, hidden layers) of each network the MLP
            backend would run (`Architecture.mlp_shapes`); None: not checked.
    """
    on_cuda = device.type == "cuda"
    mlp_problems = {"tcnn": lambda: tcnn_mlp_problem(device, mlp_shapes or {}), "torch": _usable}
    march_problems = {
        "nerfacc": nerfacc_cuda_problem if on_cuda else (lambda: "needs CUDA"),
        "torch": _usable,
    }
    grid_problems = {
        "native": lambda: native.problem_on(device),
        "tcnn": lambda: tcnn_problem(device),
        "torch": _usable,
    }
    composite_problems = {"fused": lambda: native.problem_on(device), "torch": _usable}
    choices = {  # field -> (problems, fastest first for auto)
        "march": (march_problems, ["nerfacc", "torch"]),
        "grid": (grid_problems, ["native", "torch"]),
        "composite": (composite_problems, ["fused", "torch"]),
        "mlp": (mlp_problems, ["tcnn", "torch"]),
    }
    order = sorted(choices, key=lambda field: getattr(config, field) == "auto")  # stable: named first
    resolved = {}
    for field in order:
        requested = getattr(config, field)
        if field in ("march", "mlp") and not on_cuda and requested == "auto":
            resolved[field] = "torch"  # on the CPU our marcher and PyTorch's MLPs are the design, not a fallback: no warning
            continue
        problems, fastest_first = choices[field]
        resolved[field] = _resolve(f"backend.{field}", requested, problems, fastest_first)
    return Backends(**resolved)
