"""Seeding, and capturing and restoring every random state a training run draws from.

A checkpoint holds them all, so that on the CPU a resumed run continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """torch (CPU and CUDA), numpy, Python and `generator` states, as tensors and numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler": generator.get_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": list(random.getstate()[1]),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """The inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    generator.set_state(state["sampler"].cpu())
    numpy = state["numpy"]
    keys = numpy["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached"]))
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
