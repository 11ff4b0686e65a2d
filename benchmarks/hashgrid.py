"""The hash-grid encoding, forward + backward: the torch reference against the native kernels
of cuda_ext (and tiny-cuda-nn on CUDA where it is installed).

Two grids: the demo's (configs/demo.toml [model]: 8 levels, F = 2, a 2^17 table, base 16,
finest 256) and an instant-ngp-sized one (16 levels, F = 2, a 2^19 table, base 16, finest
2048, a per-level scale of about 1.38). Each is timed as forward, a loss against a fixed
random upstream gradient, and backward to the table, at each number of points; the median
of `--repeats` runs after one warm-up. Every implementation's encoding and gradient are
checked against the reference; the speed-up over the reference is printed as `N.Nx` and
written under `speedup`.

    python -m benchmarks.hashgrid [--device cpu|cuda] [--grids demo ngp] [--points 65536 1048576] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from rich.table import Table

from benchmarks.common import RESULTS, median, write_results
from benchmarks.common import console as make_console
from fastjoint.model.hashgrid import HashGrid
from fastjoint.ops import native
from fastjoint.ops.tcnn import tcnn_problem

# name -> (levels, features per level, log2 table size, base resolution, finest resolution)
GRIDS = {
    "demo": (8, 2, 17, 16, 256),
    "ngp": (16, 2, 19, 16, 2048),
}


def make_grid(name: str, backend: str, device: torch.device) -> HashGrid:
    levels, features, log2_size, base, finest = GRIDS[name]
    scale = (finest / base) ** (1 / (levels - 1))
    torch.manual_seed(0)  # the same table for every implementation
    grid = HashGrid(levels, features, log2_size, base, scale, backend=backend).to(device)
    with torch.no_grad():
        grid.table.uniform_(-1, 1)  # values of a trained grid's size, not the 1e-4 initialisation
    return grid


def step(grid: HashGrid, x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward once; returns the encoding and the table's gradient."""
    encoded = grid(x)
    (v_table,) = torch.autograd.grad(encoded, grid.table, upstream)
    return encoded.detach(), v_table


def measure(grid: HashGrid, x: torch.Tensor, upstream: torch.Tensor, repeats: int, device: torch.device):
    results = step(grid, x, upstream)  # warm-up (and tiny-cuda-nn's first-call setup)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step(grid, x, upstream)
        sync()
        times.append(time.perf_counter() - start)
    return {"seconds": median(times), "all_seconds": times}, results


def implementations(device: torch.device) -> list[str]:
    found = ["torch"]
    problem = native.problem_on(device)
    if problem is None:
        found.append("native")
    else:
        print(f"native: not measured, it {problem}")
    if device.type == "cuda":
        problem = tcnn_problem(device)
        if problem is None:
            found.append("tcnn")
        else:
            print(f"tcnn: not measured: {problem}")
    return found


def run(device: torch.device, grids: list[str], points: list[int], repeats: int) -> dict:
    rows = []
    for name in grids:
        for n_points in points:
            generator = torch.Generator().manual_seed(1)
            x = torch.rand(n_points, 3, generator=generator).to(device)
            upstream = torch.randn(n_points, GRIDS[name][0] * GRIDS[name][1], generator=generator).to(device)
            reference = None
            for backend in implementations(device):
                row, results = measure(make_grid(name, backend, device), x, upstream, repeats, device)
                if reference is None:
                    reference, base = results, row["seconds"]
                row["max_abs_difference"] = max((a - b).abs().max().item() for a, b in zip(results, reference))
                row["speedup"] = base / row["seconds"]
                row["points_per_second"] = n_points / row["seconds"]
                rows.append({"grid": name, "points": n_points, "implementation": backend, **row})
    speedup = {f"{r['grid']}/{r['points']}/{r['implementation']}": r["speedup"] for r in rows if r["implementation"] != "torch"}
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "grids": {g: GRIDS[g] for g in grids},
        "speedup": speedup,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hashgrid", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grids", nargs="+", choices=list(GRIDS), default=list(GRIDS))
    parser.add_argument("--points", nargs="+", type=int, default=[2**16, 2**20])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    given = sys.argv[1:] if argv is None else argv
    payload = {"command": " ".join(["python -m benchmarks.hashgrid", *given]), **run(device, args.grids, args.points, args.repeats)}
    title = f"hash grid forward+backward on {device} ({payload['threads']} threads), median of {args.repeats}"
    table = Table(title=title)
    for column in ("grid", "points", "implementation", "ms", "Mpoints/s", "speed-up", "max |diff|"):
        table.add_column(column, justify="left" if column in ("grid", "implementation") else "right")
    for row in payload["rows"]:
        table.add_row(
            row["grid"],
            f"{row['points']:,}",
            row["implementation"],
            f"{row['seconds'] * 1e3:.1f}",
            f"{row['points_per_second'] / 1e6:.2f}",
            f"{row['speedup']:.1f}x",
            f"{row['max_abs_difference']:.1e}",
        )
    make_console().print(table)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    path = write_results("hashgrid" if device.type == default_device else f"hashgrid-{device.type}", payload, args.results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
