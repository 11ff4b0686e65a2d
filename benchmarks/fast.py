"""The fast renderer against the exact one, on a trained run, in one process.

- preparing: the time to bake both scenes (median of `--bakes`) and the baked form's memory;
- speed: rays/s of the exact and the fast renderer on the same frames (an orbit of the
  target at `--size` pixels, and the test views at the dataset's size), medians of `--repeats`,
  and their ratio; the fast one also with the PyTorch reference of its kernel;
- quality: PSNR of the fast renders against the exact ones on every trained pairing's and the
  transfer's test views, and eval's PSNR of both against the ground truth.

    python -m benchmarks.fast --run runs/demo [--size 256] [--repeats 5] [--bake auto|view-dependent|averaged]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from rich.table import Table

from benchmarks.common import RESULTS, write_results
from benchmarks.common import console as make_console
from fastjoint.data import Camera
from fastjoint.metrics import psnr
from fastjoint.pairing import Pairing
from fastjoint.renders import camera_split, orbit_around
from fastjoint.run import load_run
from fastjoint.scoring import backdrop, load_test_views

BAKES = {"auto": None, "view-dependent": True, "averaged": False}


def timed(function, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls after one untimed call, and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fast", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run (e.g. runs/demo)")
    parser.add_argument("--size", type=int, default=256, help="side of the orbit frames, pixels")
    parser.add_argument("--frames", type=int, default=4, help="orbit frames per timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bakes", type=int, default=3)
    parser.add_argument(
        "--bake",
        choices=list(BAKES),
        default="auto",
        help="how the scenes are baked: by their extent (auto: view-dependent when unbounded), or both one way",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = make_console()
    run = load_run(args.run)
    built = run.built
    transfer = run.pairings.transfers[0] if run.pairings.transfers else Pairing("target", "original")
    target_views = camera_split(run, transfer, "test")
    poses = orbit_around(target_views, torch.tensor(run.config.data.aabb), args.frames)
    focal = target_views.camera.focal * args.size / target_views.camera.height
    camera = Camera(args.size, args.size, focal)

    def frames():
        return [built.render_image(transfer, pose, camera) for pose in poses]

    def views():
        return built.render(transfer, target_views.poses, target_views.camera)

    rays_frames = args.frames * args.size * args.size
    rays_views = len(target_views.poses) * target_views.camera.width * target_views.camera.height
    pairings = [*run.pairings.trained, *run.pairings.transfers]
    split = {p: camera_split(run, p, "test") for p in pairings}

    built.use_renderer("exact")
    exact_frames_s, exact_frames = timed(frames, args.repeats)
    exact_views_s, _ = timed(views, args.repeats)
    exact = {p: torch.stack(built.render(p, split[p].poses, split[p].camera)) for p in pairings}

    bake_s, _ = timed(lambda: built.use_renderer("fast", view_dependent=BAKES[args.bake]), args.bakes)
    view_dependent = {scene: baked.view_dependent for scene, baked in built.baked.items()}
    memory = sum(scene.nbytes for scene in built.baked.values())
    cells = {scene: int(baked.bricks.shape[0]) for scene, baked in built.baked.items()}
    fast_frames_s, fast_frames = timed(frames, args.repeats)
    fast_views_s, _ = timed(views, args.repeats)
    fast = {p: torch.stack(built.render(p, split[p].poses, split[p].camera)) for p in pairings}
    backend = built._baked_backend
    built._baked_backend = "torch"
    reference_frames_s, _ = timed(frames, 1)
    built._baked_backend = backend

    def db(a, b) -> float:
        return -10.0 * math.log10(float(((a - b) ** 2).mean()))

    quality = {}
    for p in pairings:
        entry = {"fast_vs_exact_db": db(fast[p], exact[p])}
        dataset = run.dataset(p)
        if dataset is not None:  # the PSNR eval reports, with either renderer
            truth = load_test_views(run, dataset, p.scene)
            behind = truth.on_background(backdrop(run, p, truth))
            entry["exact_psnr"] = psnr(exact[p], behind)
            entry["fast_psnr"] = psnr(fast[p], behind)
        quality[p.name] = entry
    orbit_db = db(torch.stack(fast_frames), torch.stack(exact_frames))

    speed = {
        "orbit": {
            "rays": rays_frames,
            "exact_rays_per_s": rays_frames / exact_frames_s,
            "fast_rays_per_s": rays_frames / fast_frames_s,
            "fast_reference_rays_per_s": rays_frames / reference_frames_s,
            "ratio": exact_frames_s / fast_frames_s,
            "fast_vs_exact_db": orbit_db,
        },
        "test_views": {
            "rays": rays_views,
            "exact_rays_per_s": rays_views / exact_views_s,
            "fast_rays_per_s": rays_views / fast_views_s,
            "ratio": exact_views_s / fast_views_s,
        },
    }
    table = Table(title=f"fast vs exact renderer, {args.run} ({backend} kernel, {torch.get_num_threads()} threads)")
    table.add_column("measure")
    table.add_column("exact", justify="right")
    table.add_column("fast", justify="right")
    table.add_column("fast / exact", justify="right")
    for name, entry in speed.items():
        label = f"{args.size} px orbit frames" if name == "orbit" else "test views"
        table.add_row(f"rays/s, {label}", f"{entry['exact_rays_per_s']:,.0f}", f"{entry['fast_rays_per_s']:,.0f}", f"{entry['ratio']:.1f}x")
    table.add_row("rays/s, orbit, the kernel's PyTorch reference", "", f"{speed['orbit']['fast_reference_rays_per_s']:,.0f}", "")
    kinds = ", ".join(f"{scene} {'view-dependent' if v else 'averaged'}" for scene, v in view_dependent.items())
    table.add_row(f"bake (median; {kinds})", "", f"{bake_s:.2f} s", "")
    table.add_row("baked form's memory", "", f"{memory / 2**20:.1f} MiB", "")
    table.add_row("orbit frames, fast vs exact", "", f"{orbit_db:.2f} dB", "")
    for name, entry in quality.items():
        row = f"{entry['fast_vs_exact_db']:.2f} dB vs exact"
        scores = f"{entry['exact_psnr']:.2f} / {entry['fast_psnr']:.2f} dB" if "exact_psnr" in entry else ""
        table.add_row(f"{name} test views (PSNR to truth: exact / fast)", scores, row, "")
    console.print(table)
    payload = {
        "run": str(args.run),
        "threads": torch.get_num_threads(),
        "kernel": backend,
        "bake": args.bake,
        "view_dependent": view_dependent,
        "bake_s_median": bake_s,
        "memory_bytes": memory,
        "bricks": cells,
        "speed": speed,
        "quality": quality,
    }
    path = write_results("fast", payload, args.results)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
