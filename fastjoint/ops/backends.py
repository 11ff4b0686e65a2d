"""Choosing the implementation of each op: `auto | <name> | torch` from the config.

`auto` takes the fastest backend available on the device and, when it has to fall back,
says so in one line. Naming a backend that cannot run is a UserError saying how to get it.

Each op is one `OpChoice` record in `CHOICES` (its backends' checks, the order `auto` tries
them, whether the CPU takes the reference quietly) and one field of `Backends`: a new op
is those two lines here and its `backend.<op>` field in the config.
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
    """The resolved backend of every op (the keys of CHOICES)."""

    grid: str
    march: str
    composite: str
    mlp: str


PURE_TORCH = Backends(**dict.fromkeys(Backends._fields, "torch"))
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


def resolve_native(key: str, device: torch.device) -> str:
    """`native` where fastjoint's native kernels run on `device`, else `torch` with `auto`'s one-line warning."""
    return _resolve(key, "auto", {"native": lambda: native.problem_on(device), "torch": _usable}, ["native", "torch"])


class OpChoice(NamedTuple):
    """What `backend.<op>` may name, for one op."""

    # (device, mlp_shapes) -> each backend's check, giving None (usable) or why not; "torch",
    # the reference, is always usable.
    problems: Callable[[torch.device, Mapping[str, tuple[int, int]]], dict[str, Callable[[], str | None]]]
    fastest_first: tuple[str, ...]  # what `auto` tries, in order; the last is "torch"
    # On the CPU, `auto` is "torch" without a word: the reference is the design there, not a fallback.
    torch_on_cpu: bool = False


CHOICES: dict[str, OpChoice] = {  # resolved in this order (named ones first)
    "march": OpChoice(
        lambda device, _: {"nerfacc": nerfacc_cuda_problem if device.type == "cuda" else (lambda: "needs CUDA"), "torch": _usable},
        ("nerfacc", "torch"),
        torch_on_cpu=True,
    ),
    "grid": OpChoice(
        lambda device, _: {"native": lambda: native.problem_on(device), "tcnn": lambda: tcnn_problem(device), "torch": _usable},
        ("native", "torch"),
    ),
    "composite": OpChoice(lambda device, _: {"fused": lambda: native.problem_on(device), "torch": _usable}, ("fused", "torch")),
    "mlp": OpChoice(
        lambda device, mlp_shapes: {"tcnn": lambda: tcnn_mlp_problem(device, mlp_shapes), "torch": _usable},
        ("tcnn", "torch"),
        torch_on_cpu=True,
    ),
}
assert set(CHOICES) == set(Backends._fields), "every op has one record in CHOICES and one field in Backends"


def resolve_backends(config, device: torch.device, mlp_shapes: Mapping[str, tuple[int, int]] | None = None) -> Backends:
    """Resolves `config` (a BackendConfig) for `device`.

    Backends named explicitly are checked first, so a named one that cannot run ends the
    run with its one-line error before any `auto` fallback has printed a warning.

    Args:
        mlp_shapes: config key -> (hidden units, hidden layers) of each network the MLP
            backend would run (`Architecture.mlp_shapes`); None: not checked.
    """
    order = sorted(CHOICES, key=lambda field: getattr(config, field) == "auto")  # stable: named first
    resolved = {}
    for field in order:
        requested, choice = getattr(config, field), CHOICES[field]
        if choice.torch_on_cpu and device.type != "cuda" and requested == "auto":
            resolved[field] = "torch"
            continue
        problems = choice.problems(device, mlp_shapes or {})
        resolved[field] = _resolve(f"backend.{field}", requested, problems, list(choice.fastest_first))
    return Backends(**resolved)
