"""Choosing the implementation of each op: `auto | <name> | torch` from the config.

`auto` takes the fastest backend available on the device and, when it has to fall back,
says so in one line. Naming a backend that cannot run is a UserError saying how to get it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from fastjoint.errors import UserError
from fastjoint.log import warn_once
from fastjoint.ops import native


class Backends(NamedTuple):
    grid: str
    march: str
    composite: str


@functools.lru_cache(maxsize=None)
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


def _resolve(key: str, requested: str, available: dict[str, str | None], fastest_first: list[str]) -> str:
    """Picks a backend; `available` maps each name to None (usable) or why not."""
    if requested != "auto":
        problem = available[requested]
        if problem is not None:
            raise UserError(f"{key} = \"{requested}\" cannot run here: {problem}")
        return requested
    for name in fastest_first:
        if available[name] is None:
            if name != fastest_first[0]:
                best = fastest_first[0]
                warn_once(f"{key}: {best} {available[best]}; using {name} (slower)")
            return name
    raise AssertionError(f"no usable backend for {key}")


def resolve_backends(config, device: torch.device) -> Backends:
    """Resolves `config` (a BackendConfig) for `device`."""
    on_cuda = device.type == "cuda"
    march_available = {
        "nerfacc": nerfacc_cuda_problem() if on_cuda else "needs CUDA",
        "torch": None,
    }
    if not on_cuda and config.march == "auto":
        # On the CPU our marcher is the design, not a fallback: no warning.
        march = "torch"
    else:
        march = _resolve("backend.march", config.march, march_available, ["nerfacc", "torch"])
    grid = _resolve("backend.grid", config.grid, {"torch": None}, ["torch"])
    composite_available = {"fused": native.problem_on(device), "torch": None}
    composite = _resolve("backend.composite", config.composite, composite_available, ["fused", "torch"])
    return Backends(grid=grid, march=march, composite=composite)
