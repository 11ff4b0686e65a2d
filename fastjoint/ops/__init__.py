"""Functional building blocks: one module per op, pure-PyTorch references in _torch_impl."""

from fastjoint.ops.backends import PURE_TORCH, Backends, resolve_backends
from fastjoint.ops.composite import CompositeResult, composite
from fastjoint.ops.hashgrid import GridLayout, grid_layout, hashgrid_encode
from fastjoint.ops.march import MarchResult, march_rays

__all__ = [
    "PURE_TORCH",
    "Backends",
    "CompositeResult",
    "GridLayout",
    "MarchResult",
    "composite",
    "grid_layout",
    "hashgrid_encode",
    "march_rays",
    "resolve_backends",
]
