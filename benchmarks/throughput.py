"""Throughput and memory of every available backend combination (and of the mlp baseline).

One more row repeats the default backends with the feature heads and the style decoders
compiled by `torch.compile` (dynamic shapes; the warm-up steps, and one untimed frame,
include the compiling), to show in the same run whether fusing the small networks' kernels
pays. Each combination runs in a fresh subprocess (so its peak memory is its own): it trains
`--warmup` steps (the occupancy grids carve empty space), then times `--steps` steps, and
renders the test views of the first transfer, target:<style>, at the dataset's resolution (one
untimed frame first), with the exact renderer and then, for the hash-grid rows, with the fast one
(`--renderer fast`: bake, then the same frames). Reported: training rays/s and samples/s,
rendering frames/s and rays/s of both renderers, the bake's time, peak CPU RSS and, on CUDA,
peak allocated memory.

    python -m benchmarks.throughput [--warmup 300] [--steps 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

import torch
from rich.table import Table

from benchmarks.common import RESULTS, write_results
from benchmarks.common import console as make_console
from fastjoint.architecture import architecture
from fastjoint.config import BackendConfig, Config, load_config
from fastjoint.errors import UserError
from fastjoint.ops import resolve_backends
from fastjoint.run import resolve_device

REPO = Path(__file__).resolve().parents[1]


def combinations(config: Config) -> list[dict]:
    """Every backend choice that resolves on this machine, for the hash grids; one mlp row."""
    device = resolve_device(config.device)
    shapes = architecture(config).mlp_shapes(config)
    keys = [f.name for f in dataclasses.fields(BackendConfig)]
    choices = [[c for c in typing.get_args(typing.get_type_hints(BackendConfig)[k]) if c != "auto"] for k in keys]
    found = []
    for values in itertools.product(*choices):
        backend = BackendConfig(**dict(zip(keys, values)))
        try:
            resolve_backends(backend, device, shapes)
        except UserError:
            continue  # not available here
        found.append({"encoder": "hashgrid", **dict(zip(keys, values)), "compile": False})
    default = resolve_backends(BackendConfig(), device, shapes)  # one of the above, found available
    found.append({"encoder": "hashgrid", **default._asdict(), "compile": True})
    found.append({"encoder": "mlp", **dict(zip(keys, ("auto",) * len(keys))), "compile": False})
    return found


def compile_networks(model: torch.nn.Module) -> None:
    """Compiles, in place, the feature heads' two passes and every style decoder (torch.compile, dynamic shapes)."""
    for head in {id(encoder.head): encoder.head for encoder in model.encoders.values()}.values():
        head.density = torch.compile(head.density, dynamic=True)
        head.feature = torch.compile(head.feature, dynamic=True)
    for decoder in model.decoders.values():
        decoder.forward = torch.compile(decoder.forward, dynamic=True)


def worker(config_path: Path, combo: dict, warmup: int, steps: int, frames: int) -> dict:
    """Runs in the subprocess: measures one combination."""
    from fastjoint.renders import camera_split
    from fastjoint.run import LoadedRun
    from fastjoint.train import Trainer

    base = load_config(config_path)
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(
            base,
            name="throughput",
            output_dir=tmp,
            model=dataclasses.replace(base.model, encoder=combo["encoder"]),
            backend=BackendConfig(**{k: v for k, v in combo.items() if k not in ("encoder", "compile")}),
            train=dataclasses.replace(base.train, steps=10**9),
        )
        trainer = Trainer(config)
        if combo["compile"]:
            compile_networks(trainer.built.model)
        for _ in range(warmup):
            trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rays = samples = 0
        start = time.perf_counter()
        for _ in range(steps):
            stats = trainer.train_step()
            rays += stats.rays
            samples += stats.samples
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - start

        run = LoadedRun(config.run_dir, config, trainer.built, trainer.step, 0.0, config.data.pairings, {})
        trainer.built.train(False)
        transfer = config.data.pairings.transfers[0]
        views = camera_split(run, transfer, "test")
        views = dataclasses.replace(views, poses=views.poses[:frames])
        run.render(transfer, views.poses[:1], views.camera)  # one untimed frame (for torch.compile, its compiling)
        render_seconds = timed_render(run, transfer, views, trainer.device)
        fast = {"fast_frames_per_second": None, "bake_seconds": None, "baked_mb": None}
        if combo["encoder"] == "hashgrid" and not combo["compile"]:  # the fast renderer, same frames, same process
            start = time.perf_counter()
            trainer.built.use_renderer("fast")
            bake_seconds = time.perf_counter() - start
            run.render(transfer, views.poses[:1], views.camera)  # one untimed frame, as for the exact renderer
            fast_seconds = timed_render(run, transfer, views, trainer.device)
            fast = {
                "fast_frames_per_second": len(views.poses) / fast_seconds,
                "bake_seconds": bake_seconds,
                "baked_mb": sum(b.nbytes for b in trainer.built.baked.values()) / 2**20,
            }
            trainer.built.use_renderer("exact")
    pixels = views.camera.width * views.camera.height
    return {
        **combo,
        "device": str(trainer.device),
        "train_steps_timed": steps,
        "rays_per_second": rays / train_seconds,
        "samples_per_second": samples / train_seconds,
        "samples_per_ray": samples / rays,
        "frames_per_second": len(views.poses) / render_seconds,
        "render_rays_per_second": len(views.poses) * pixels / render_seconds,
        **fast,
        "fast_rays_per_second": fast["fast_frames_per_second"] * pixels if fast["fast_frames_per_second"] else None,
        "resolution": [views.camera.width, views.camera.height],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if trainer.device.type == "cuda" else None,
    }


def timed_render(run, transfer: str, views, device: torch.device) -> float:
    """Seconds to render `views` of `transfer` with the run's current renderer."""
    start = time.perf_counter()
    run.render(transfer, views.poses, views.camera)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(config_path: Path, warmup: int, steps: int, frames: int, results: Path, mlp_steps: int) -> dict:
    console = make_console()
    config = load_config(config_path)
    rows = []
    for combo in combinations(config):
        is_mlp = combo["encoder"] == "mlp"
        args = [
            sys.executable,
            "-m",
            "benchmarks.throughput",
            "--worker",
            json.dumps(combo),
            "--config",
            str(config_path),
            "--warmup",
            str(min(warmup, 2) if is_mlp else warmup),
            "--steps",
            str(mlp_steps if is_mlp else steps),
            "--frames",
            str(frames),
        ]
        label = " ".join(f"{k}={v}" for k, v in combo.items())
        with console.status(f"measuring {label}..."):
            done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:  # recorded, not fatal: the other combinations still count
            error = (done.stderr.strip().splitlines() or ["no output"])[-1]
            console.print(f"[red]{label}: failed: {error}")
            rows.append({**combo, "error": error})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    measured = [r for r in rows if "error" not in r]
    device = measured[0]["device"] if measured else "no combination ran"
    table = Table(title=f"throughput ({config_path.name}, {device})")
    for column in (
        "encoder",
        "grid",
        "march",
        "composite",
        "mlp",
        "compiled",
        "train rays/s",
        "samples/s",
        "render frames/s",
        "render rays/s",
        "fast rays/s",
        "fast/exact",
        "bake",
        "peak RSS",
        "peak CUDA",
    ):
        table.add_column(column, justify="right" if " " in column or column.startswith("peak") else "left")
    for r in measured:
        cuda = f"{r['peak_cuda_mb']:.0f} MB" if r["peak_cuda_mb"] is not None else "-"
        table.add_row(
            r["encoder"],
            r["grid"],
            r["march"],
            r["composite"],
            r["mlp"],
            "yes" if r["compile"] else "",
            f"{r['rays_per_second']:,.0f}",
            f"{r['samples_per_second']:,.0f}",
            f"{r['frames_per_second']:.2f}",
            f"{r['render_rays_per_second']:,.0f}",
            f"{r['fast_rays_per_second']:,.0f}" if r.get("fast_rays_per_second") else "-",
            f"{r['fast_rays_per_second'] / r['render_rays_per_second']:.1f}x" if r.get("fast_rays_per_second") else "-",
            f"{r['bake_seconds']:.1f} s" if r.get("bake_seconds") else "-",
            f"{r['peak_rss_mb']:.0f} MB",
            cuda,
        )
    console.print(table)
    payload = {"config": str(config_path), "warmup_steps": warmup, "timed_steps": steps, "mlp_timed_steps": mlp_steps, "rows": rows}
    path = write_results("throughput", payload, results)
    console.print(f"results: {path}")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--warmup", type=int, default=300, help="untimed training steps first")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps (hash grids)")
    parser.add_argument("--mlp-steps", type=int, default=3, help="timed training steps (mlp baseline)")
    parser.add_argument("--frames", type=int, default=8, help="test views rendered")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.config, json.loads(args.worker), args.warmup, args.steps, args.frames)))
        return 0
    run(args.config, args.warmup, args.steps, args.frames, args.results, args.mlp_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
