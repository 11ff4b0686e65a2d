"""Peak memory of loading a large dataset: `python -m benchmarks.load_memory [--size 800] [--views 100]`.

Writes a Blender-format dataset of `views` RGBA PNGs of size x size pixels (procedural
images: smooth colour fields inside a transparent border, cached under data/generated/),
then loads its train split in a fresh Python process per measurement and reports that
process's peak resident memory, its rise above the resident memory after importing
fastjoint and torch, and the bytes of the images it holds. `--checkout` measures another
checkout's loader (for a before/after comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from rich.table import Table

from benchmarks.common import RESULTS, console, write_results

REPO = Path(__file__).resolve().parents[1]

MEASURE = """
import json, resource, sys, time
import torch
from fastjoint.data import load_split
# Resident memory now (kB), not the peak: importing torch peaks above where it settles.
before = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
start = time.perf_counter()
split = load_split(sys.argv[1], "train", int(sys.argv[2]))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
held = split.pixels if hasattr(split, "pixels") else split.images
print(json.dumps({"imports_mb": before / 1024, "peak_mb": peak / 1024, "load_mb": (peak - before) / 1024,
                  "held_mb": held.numel() * held.element_size() / 2**20, "dtype": str(held.dtype),
                  "shape": list(held.shape), "seconds": seconds}))
"""


def write_dataset(folder: Path, size: int, views: int) -> Path:
    """A Blender-format dataset of `views` procedural RGBA images (once; kept as a cache)."""
    stamp = folder / "done.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == {"size": size, "views": views}:
        return folder
    (folder / "train").mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:size, 0:size] / size
    frames = []
    for i in range(views):
        phase = 2 * math.pi * i / views
        rgb = np.stack([0.5 + 0.5 * np.sin(6 * xs + phase), 0.5 + 0.5 * np.cos(5 * ys - phase), 0.5 + 0.5 * np.sin(4 * (xs + ys))], -1)
        alpha = ((xs - 0.5) ** 2 + (ys - 0.5) ** 2 < 0.2).astype(np.float64)[..., None]
        iio.imwrite(folder / "train" / f"r_{i}.png", np.round(np.concatenate([rgb, alpha], -1) * 255).astype(np.uint8))
        angle = phase
        pose = np.eye(4)
        pose[:3, 3] = [4 * math.cos(angle), 4 * math.sin(angle), 0.0]
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": pose.tolist()})
    (folder / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.6911112, "frames": frames}))
    stamp.write_text(json.dumps({"size": size, "views": views}))
    return folder


def measure(folder: Path, downscale: int, checkout: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(folder), str(downscale)],
        env=dict(os.environ, PYTHONPATH=str(checkout)),
        cwd=checkout,  # `python -c` puts the working folder first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=800, help="image side in pixels")
    parser.add_argument("--views", type=int, default=100, help="number of images")
    parser.add_argument("--downscale", type=int, nargs="+", default=[1, 2], help="data.downscale values to measure")
    parser.add_argument("--checkout", type=Path, default=REPO, help="the fastjoint checkout whose loader is measured")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "generated", help="where the dataset is written")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    folder = write_dataset(args.data / f"memory-{args.size}px-{args.views}", args.size, args.views)
    rows = [{"size": args.size, "views": args.views, "downscale": d, **measure(folder, d, args.checkout)} for d in args.downscale]
    table = Table(title=f"Loading {args.views} images of {args.size} px ({args.checkout})")
    for column in ("downscale", "held as", "images held (MB)", "peak above imports (MB)", "process peak (MB)", "load (s)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["downscale"]),
            row["dtype"].removeprefix("torch."),
            f"{row['held_mb']:.0f}",
            f"{row['load_mb']:.0f}",
            f"{row['peak_mb']:.0f}",
            f"{row['seconds']:.1f}",
        )
    console().print(table)
    path = write_results("load_memory", {"checkout": str(args.checkout), "rows": rows}, args.results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
