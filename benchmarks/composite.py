"""Compositing, forward + backward: the torch reference against the fused kernel of cuda_ext.

Same packed batch for every implementation (rays x samples per ray, each ray full), timed
as forward, a loss over all three outputs, and backward to sigmas and rgbs; the median of
`--repeats` runs after warm-up. Memory: the bytes autograd holds for backward (device-
independent), and the CUDA peak on a GPU. On CUDA, nerfacc's `rendering` on the same
inputs joins the table. Every implementation's outputs are checked against the reference.

    python -m benchmarks.composite [--device cpu|cuda] [--sizes 4096x64 65536x32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.table import Table

from benchmarks.common import RESULTS, median, write_results
from benchmarks.common import console as make_console
from fastjoint.ops import composite, native

Inputs = tuple[torch.Tensor, ...]


def packed_batch(n_rays: int, per_ray: int, device: torch.device, seed: int = 0) -> Inputs:
    """Every ray `per_ray` contiguous samples over [2, ~4], densities such that rays saturate."""
    generator = torch.Generator().manual_seed(seed)
    dt = torch.rand(n_rays, per_ray, generator=generator) * 0.02 + 0.02
    ends = 2.0 + torch.cumsum(dt, dim=1)
    starts = ends - dt
    sigmas = torch.rand(n_rays * per_ray, generator=generator) * 4.0
    rgbs = torch.rand(n_rays * per_ray, 3, generator=generator)
    ray_indices = torch.arange(n_rays).repeat_interleave(per_ray)
    tensors = (sigmas, rgbs, starts.flatten(), ends.flatten(), ray_indices)
    return tuple(t.to(device) for t in tensors)


def by_backend(backend: str) -> Callable[[Inputs, int], tuple[torch.Tensor, ...]]:
    def run(inputs: Inputs, n_rays: int) -> tuple[torch.Tensor, ...]:
        sigmas, rgbs, starts, ends, indices = inputs
        return tuple(composite(sigmas, rgbs, starts, ends, indices, n_rays, backend))

    return run


def nerfacc_rendering(inputs: Inputs, n_rays: int) -> tuple[torch.Tensor, ...]:
    import nerfacc

    sigmas, rgbs, starts, ends, indices = inputs
    colours, opacities, depths, _ = nerfacc.rendering(starts, ends, indices, n_rays=n_rays, rgb_sigma_fn=lambda t0, t1, i: (rgbs, sigmas))
    # nerfacc divides the depth by the opacity; undo it so that all three compute the same thing.
    return colours, opacities[:, 0], (depths * opacities)[:, 0]


def step(function, inputs: Inputs, n_rays: int, upstream: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Forward and backward once; returns the outputs and the two gradients."""
    sigmas, rgbs = (t.detach().requires_grad_() for t in inputs[:2])
    outputs = function((sigmas, rgbs, *inputs[2:]), n_rays)
    loss = sum((o * u).sum() for o, u in zip(outputs, upstream))
    v_sigmas, v_rgbs = torch.autograd.grad(loss, (sigmas, rgbs))
    return (*(o.detach() for o in outputs), v_sigmas, v_rgbs)


def saved_bytes(function, inputs: Inputs, n_rays: int) -> int:
    """Bytes of the tensors autograd keeps for backward, counted once each."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    sigmas, rgbs = (t.detach().requires_grad_() for t in inputs[:2])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        function((sigmas, rgbs, *inputs[2:]), n_rays)
    return sum(seen.values())


def measure(function, inputs: Inputs, n_rays: int, repeats: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(1)
    upstream = [torch.randn(shape, generator=generator).to(device) for shape in ((n_rays, 3), (n_rays,), (n_rays,))]
    for _ in range(2):
        results = step(function, inputs, n_rays, upstream)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step(function, inputs, n_rays, upstream)
        sync()
        times.append(time.perf_counter() - start)
    row = {"seconds": median(times), "all_seconds": times, "saved_for_backward_bytes": saved_bytes(function, inputs, n_rays)}
    if device.type == "cuda":
        row["cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - base
    return row, results


def run(device: torch.device, sizes: list[tuple[int, int]], repeats: int) -> dict:
    problem = native.problem_on(device)
    implementations = {"torch": by_backend("torch")}
    if problem is None:
        implementations["fused"] = by_backend("fused")
    else:
        print(f"fused: not measured, it {problem}")
    if device.type == "cuda":
        implementations["nerfacc"] = nerfacc_rendering
    rows = []
    for n_rays, per_ray in sizes:
        inputs = packed_batch(n_rays, per_ray, device)
        reference = None
        for name, function in implementations.items():
            try:
                row, results = measure(function, inputs, n_rays, repeats, device)
            except Exception as error:  # nerfacc's kernels may fail to build; the rest still counts
                print(f"{name}: failed: {type(error).__name__}: {error}".splitlines()[0])
                continue
            if reference is None:
                reference = results
            row["max_abs_difference"] = max((a - b).abs().max().item() for a, b in zip(results, reference))
            rows.append({"rays": n_rays, "samples_per_ray": per_ray, "implementation": name, **row})
        base = next(
            r["seconds"] for r in rows if r["rays"] == n_rays and r["samples_per_ray"] == per_ray and r["implementation"] == "torch"
        )
        for r in rows:
            if r["rays"] == n_rays and r["samples_per_ray"] == per_ray:
                r["speedup_vs_torch"] = base / r["seconds"]
    return {"device": str(device), "threads": torch.get_num_threads(), "repeats": repeats, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.composite", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", nargs="+", default=["4096x64", "65536x32"], help="RAYSxSAMPLES")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
    device = torch.device(args.device)
    given = sys.argv[1:] if argv is None else argv
    payload = {"command": " ".join(["python -m benchmarks.composite", *given]), **run(device, sizes, args.repeats)}
    table = Table(title=f"composite forward+backward on {device} ({payload['threads']} threads), median of {args.repeats}")
    for column in ("batch", "implementation", "ms", "vs torch", "saved for backward", "CUDA peak", "max |diff|"):
        table.add_column(column, justify="left" if column in ("batch", "implementation") else "right")
    for row in payload["rows"]:
        peak = f"{row['cuda_peak_bytes'] / 2**20:.1f} MiB" if "cuda_peak_bytes" in row else "-"
        table.add_row(
            f"{row['rays']} x {row['samples_per_ray']}",
            row["implementation"],
            f"{row['seconds'] * 1e3:.2f}",
            f"{row['speedup_vs_torch']:.1f}x",
            f"{row['saved_for_backward_bytes'] / 2**20:.1f} MiB",
            peak,
            f"{row['max_abs_difference']:.1e}",
        )
    make_console().print(table)
    path = write_results(f"composite-{device.type}", payload, args.results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
