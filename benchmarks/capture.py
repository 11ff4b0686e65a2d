"""A real capture, end to end: instant-ngp's fox (a phone capture of an object in a room) as the target.

    python -m benchmarks.capture --source PATH/TO/instant-ngp/data/nerf/fox [--seconds 600] [--runs runs/capture]

The data: `data/nerf/fox` of https://github.com/NVlabs/instant-ngp (50 photos, 1080 x 1920, COLMAP
poses in a transforms.json with OPENCV distortion and `aabb_scale` 4). Its licence is NVIDIA's
Source Code License (non-commercial research), so fastjoint does not ship it: clone instant-ngp
(or download that folder) and name it with `--source`. Its transforms.json lists 67 frames of
which 50 have photos in the repository; the benchmark copies it to `<runs>/fox` with the 50.

The analogy: the fox as the target (1/8 size: 135 x 240 px, every 8th view held out, 7 test
views), the kit's `paper` reference and its recolour style (written on first use). Each variant
trains for `--seconds` (a probe of `--probe-steps` steps first sets train.steps to what fits, so
that the learning-rate schedule ends about on time; `--max-seconds` stops it at the budget), then the target's held-out views are scored:

- `box`: data.unbounded = "none": everything in data.aabb, the environment map beyond (fastjoint before
  unbounded scenes, on every default);
- `levels3`: as box, with render.occ_levels = 3 named by hand (the box grown 4x for both grids);
- `unbounded`: every default (auto: the opaque nerfstudio capture is unbounded; 3 occupancy levels
  from its aabb_scale, the hash grid contracted beyond the box, cone stepping, rays starting 1.5
  from the camera);
- `at-camera`: as unbounded, with render.near = 0: rays start at the camera (fastjoint before the
  near plane).

`--seeds 0 1 2` trains each variant at each seed (the fox's floaters come and go with the seed:
one run decides nothing) and reports each figure's mean and range; `--steps N` trains exactly N
steps instead of what fits `--seconds`, so that variants compare on a machine that is not quiet.

It reports PSNR and SSIM on the test views (and the median view's PSNR), samples per ray there,
the steps done, and writes a contact sheet of three test views (truth, then each variant, at the
first seed) to `results/pictures/`. Issue 22's
target: at least 27 dB at 1/8 size after 10 minutes on 2 cores, no box edge in the renders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from benchmarks.common import REPO, RESULTS, fastjoint, kit_analogy, machine_slug, pictures, write_results
from benchmarks.common import console as make_console
from benchmarks.experiments import contact_sheet
from fastjoint.config import to_toml
from fastjoint.data import image_rays
from fastjoint.metrics import psnr, ssim
from fastjoint.pairing import Pairing
from fastjoint.run import load_run
from fastjoint.scoring import backdrop, load_test_views
from fastjoint.sweepsummary import spread as fj_spread

VARIANTS = {
    "box": ["--data.unbounded", "none"],
    "levels3": ["--data.unbounded", "none", "--render.occ_levels", "3"],
    "unbounded": [],
    "at-camera": ["--render.near", "0"],
}
SHEET_VIEWS = (0, 3, 6)
TARGET = Pairing("target", "original")


def prepare(source: Path, folder: Path) -> Path:
    """A copy of the capture with only the frames whose photo exists."""
    meta = json.loads((source / "transforms.json").read_text())
    frames = [frame for frame in meta["frames"] if (source / frame["file_path"]).is_file()]
    if not frames:
        raise SystemExit(f"{source}: no frame of transforms.json has its photo")
    if (folder / "transforms.json").is_file():
        return folder
    for frame in frames:
        (folder / frame["file_path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / frame["file_path"], folder / frame["file_path"])
    (folder / "transforms.json").write_text(json.dumps({**meta, "frames": frames}, indent=1))
    print(f"{folder}: {len(frames)} of {len(meta['frames'])} frames have photos")
    return folder


def write_config(capture: Path, runs: Path) -> Path:
    """The analogy: the capture at 1/8 size against the kit's paper reference and its recolour style."""
    path = runs / "capture.toml"
    path.write_text(to_toml(kit_analogy(capture, "capture", runs, target_downscale=8)))
    return path


def steps_that_fit(config: Path, runs: Path, name: str, options: list[str], seconds: float, probe_steps: int) -> tuple[int, float]:
    """train.steps that fit `seconds`: the probe's steps, then as many more as fit the time left at the
    seconds per step of the probe's second half (steps get cheaper as the occupancy grid carves space)."""
    probe = runs / f"probe-{name}"
    shutil.rmtree(probe, ignore_errors=True)
    fastjoint("train", str(config), "--output-dir", str(runs), "--name", probe.name, "--train.steps", str(probe_steps),
              "--train.log_every", str(probe_steps // 2), "--no-render", "--no-eval", *options)  # fmt: skip
    lines = [json.loads(line) for line in (probe / "metrics.jsonl").read_text().splitlines() if line.strip()]
    per_step = (lines[-1]["wall_seconds"] - lines[0]["wall_seconds"]) / (lines[-1]["step"] - lines[0]["step"])
    shutil.rmtree(probe)
    return probe_steps + max(0, int((seconds - lines[-1]["wall_seconds"]) / per_step)), per_step


@torch.no_grad()
def score(run_dir: Path) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    """PSNR, SSIM and samples per ray on the target's test views; the renders and the truths."""
    run = load_run(run_dir)
    views = load_test_views(run, run.config.data.dataset(TARGET), "target")
    behind = backdrop(run, TARGET, views)
    renders, truths, psnrs, ssims, samples, rays = [], [], [], [], 0, 0
    for index, pose in enumerate(views.poses):
        background = behind[index] if behind.dim() == 4 else behind
        truth = views.on_background(background, index)
        o, d = image_rays(pose.to(run.built.device), views.camera)
        result = run.built.render_chunked(TARGET, o, d)  # on the pairing's backdrop, as eval scores it
        image = result.rgb.reshape(truth.shape).clamp(0.0, 1.0).cpu()
        samples += result.n_samples
        rays += o.shape[0]
        psnrs.append(psnr(image, truth))
        ssims.append(ssim(image, truth))
        renders.append(image.numpy())
        truths.append(truth.numpy())
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return (
        {
            "psnr": float(np.mean(psnrs)),
            "view_psnrs": [float(p) for p in psnrs],
            "median_view_psnr": float(np.median(psnrs)),
            "ssim": float(np.mean(ssims)),
            "samples_per_ray": samples / rays,
            "steps": run.step,
            "train_seconds": run.train_seconds,
            "train_samples_per_ray": metrics["samples_per_ray"],
            "extents": {scene: extent.to_json() for scene, extent in run.built.extents.items()},
        },
        renders,
        truths,
    )


def summarise(per_seed: dict[int, dict]) -> dict:
    """A variant's runs: each figure's mean, lowest and highest over the seeds, and every seed's own row."""
    keys = ("psnr", "ssim", "samples_per_ray", "steps", "train_seconds", "train_samples_per_ray", "median_view_psnr")
    rows = list(per_seed.values())
    summary = {key: fj_spread([float(r[key]) for r in rows])._asdict() for key in keys}
    return {**summary, "n": len(rows), "seeds": {str(seed): row for seed, row in per_seed.items()}}


def spread(figure: dict, fmt: str) -> str:
    """mean (lowest to highest), or the one value of a single run."""
    if figure["low"] == figure["high"]:
        return fmt.format(figure["mean"])
    return f"{fmt.format(figure['mean'])} ({fmt.format(figure['low'])} to {fmt.format(figure['high'])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="instant-ngp's data/nerf/fox folder")
    parser.add_argument("--seconds", type=float, default=600.0, help="training budget of each variant")
    parser.add_argument("--probe-steps", type=int, default=300, help="steps of the probe that sets train.steps")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "capture")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train each variant at these seeds (mean and range)")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train exactly this many steps (0: what fits --seconds, by a probe; a fixed count compares variants on a busy machine)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    capture = prepare(args.source.resolve(), runs / "fox")
    config = write_config(capture, runs)
    rows, sheets = {}, {}
    truths: list[np.ndarray] = []
    for name in args.variants:
        options = VARIANTS[name]
        per_seed = {}
        for seed in args.seeds:
            run_name = name if seed == 0 else f"{name}-seed{seed}"
            run_dir = runs / run_name
            if not (run_dir / "eval.json").is_file():
                shutil.rmtree(run_dir, ignore_errors=True)
                if args.steps:
                    steps, budget = args.steps, []
                else:
                    steps, per_step = steps_that_fit(config, runs, name, options, args.seconds, args.probe_steps)
                    budget = ["--max-seconds", str(args.seconds)]
                    print(f"{run_name}: {steps} steps planned ({per_step:.2f} s per step in the probe)")
                start = time.time()
                fastjoint("train", str(config), "--output-dir", str(runs), "--name", run_name, "--train.steps", str(steps),
                          "--train.seed", str(seed), "--no-render", *budget, *options)  # fmt: skip
                print(f"{run_name}: command {time.time() - start:.0f} s")
            per_seed[seed], renders, truths = score(run_dir)
            sheets.setdefault(name, renders)
            print(run_name, json.dumps({k: v for k, v in per_seed[seed].items() if k != "extents"}))
        rows[name] = summarise(per_seed)
    seeds = ", ".join(map(str, args.seeds))
    budget = f"{args.steps} steps" if args.steps else f"{args.seconds:.0f} s of training"
    table = Table(title=f"instant-ngp's fox at 1/8 size, {budget} per run, seeds {seeds}: mean (lowest to highest)")
    for column in ("variant", "steps", "train s", "PSNR", "SSIM", "samples/ray (test views)", "views: median PSNR"):
        table.add_column(column)
    for name, row in rows.items():
        table.add_row(
            name,
            spread(row["steps"], "{:.0f}"),
            spread(row["train_seconds"], "{:.0f}"),
            spread(row["psnr"], "{:.2f}"),
            spread(row["ssim"], "{:.3f}"),
            spread(row["samples_per_ray"], "{:.1f}"),
            spread(row["median_view_psnr"], "{:.2f}"),
        )
    make_console().print(table)
    date = time.strftime("%Y-%m-%d")
    sheet = pictures(args.results) / f"{machine_slug()}-{date}-capture-fox.png"
    contact_sheet(
        [("truth", [truths[v] for v in SHEET_VIEWS])] + [(name, [sheets[name][v] for v in SHEET_VIEWS]) for name in sheets], sheet
    )
    print(f"contact sheet: {sheet}")
    print(
        write_results(
            "capture-fox",
            {
                "seconds": args.seconds,
                "steps": args.steps,
                "seeds": args.seeds,
                "source": "NVlabs/instant-ngp data/nerf/fox",
                "variants": rows,
            },
            args.results,
        )
    )


if __name__ == "__main__":
    main()
