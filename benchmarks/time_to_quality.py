"""Time to quality: fastjoint's hash grids against the research code's MLP, same budget.

Both models train on the same config (the baseline with `--model.encoder mlp`) in this one
process, one after the other, each for at most `--budget` seconds of training. Every
`--interval` seconds of training (the clock stops while it measures) the held-out PSNR of
each trained pairing is measured on a fixed random set of test-view pixels. Reported: for
each pairing, and for all trained pairings together, the training time each model needs to reach
`--threshold` dB, and the ratio; both curves as a PNG in <results>/pictures/ (git ignores it).

    python -m benchmarks.time_to_quality [--budget 1200] [--interval 15] [--threshold 25]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from rich.table import Table

from benchmarks.common import RESULTS, pictures, write_results
from benchmarks.common import console as make_console
from benchmarks.plot import PALETTE, line_plot
from fastjoint.config import Config, load_config
from fastjoint.data import pixel_rays
from fastjoint.datasets import load_scene_split
from fastjoint.metrics import psnr
from fastjoint.train import Trainer

REPO = Path(__file__).resolve().parents[1]
MODELS = ("hashgrid", "mlp")
# The baseline's steps are unbounded: only the budget stops it (its schedule is step-based
# and independent of train.steps). The hash grids keep the config's schedule.
UNBOUNDED_STEPS = 10**9


class HeldOut:
    """A fixed random set of test-view pixels per pairing, on the render background."""

    def __init__(self, config: Config, n_pixels: int, device: torch.device, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        background = torch.tensor(config.render.background)
        self.background = background.to(device)
        self.rays = {}
        for pairing in config.data.pairings.trained:
            split = load_scene_split(config.data, pairing.scene, config.data.dataset(pairing), "test")
            count, height, width = split.pixels.shape[:3]
            n = min(n_pixels, count * height * width)
            flat = torch.randperm(count * height * width, generator=generator)[:n]
            image, row, col = flat // (height * width), (flat // width) % height, flat % width
            origins, dirs = pixel_rays(split.poses[image], col.float() + 0.5, row.float() + 0.5, split.camera)
            truth = split.on_background(background)[image, row, col]
            self.rays[pairing] = (origins.to(device), dirs.to(device), truth)

    @torch.no_grad()
    def psnr(self, trainer: Trainer) -> dict[str, float]:
        out = {}
        for pairing, (origins, dirs, truth) in self.rays.items():
            rgb = trainer.built.render_chunked(pairing, origins, dirs, self.background).rgb
            out[pairing.name] = psnr(rgb.clamp(0, 1).cpu(), truth)
        return out


def model_config(base: Config, model: str, output_dir: Path) -> Config:
    config = dataclasses.replace(base, name=f"ttq-{model}", output_dir=str(output_dir))
    if model == "mlp":
        config = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, encoder="mlp"),
            train=dataclasses.replace(config.train, steps=UNBOUNDED_STEPS),
        )
    return config


def train_curve(config: Config, budget: float, interval: float, n_pixels: int, console) -> dict:
    """Trains under a budget; returns the held-out PSNR curve against training seconds."""
    trainer = Trainer(config)
    held_out = HeldOut(config, n_pixels, trainer.device)
    curve = [{"seconds": 0.0, "step": 0, "psnr": held_out.psnr(trainer)}]
    clock, next_eval = 0.0, interval
    with console.status(f"{config.model.encoder}: training...") as status:
        while clock < budget and trainer.step < config.train.steps:
            tick = time.perf_counter()
            trainer.train_step()
            clock += time.perf_counter() - tick
            if clock >= next_eval or clock >= budget or trainer.step >= config.train.steps:
                point = {"seconds": clock, "step": trainer.step, "psnr": held_out.psnr(trainer)}
                curve.append(point)
                next_eval += interval
                shown = " ".join(f"{v:.1f}" for v in point["psnr"].values())
                status.update(f"{config.model.encoder}: {clock:.0f}/{budget:.0f} s, step {trainer.step}, PSNR {shown}")
    return {"curve": curve, "steps": trainer.step, "seconds": clock, "finished": trainer.step >= config.train.steps}


def time_to(curve: list[dict], threshold: float, pairings: list[str]) -> float | None:
    """Training seconds of the first measurement where every named pairing reaches the threshold."""
    for point in curve:
        if all(point["psnr"][p] >= threshold for p in pairings):
            return point["seconds"]
    return None


def summarise(runs: dict[str, dict], threshold: float, budget: float) -> list[dict]:
    rows = []
    names = list(runs["hashgrid"]["curve"][0]["psnr"])  # the trained pairings
    for label, pairings in [(p, [p]) for p in names] + [("all trained", names)]:
        row = {"pairing": label}
        for model in MODELS:
            curve = runs[model]["curve"]
            row[f"{model}_seconds"] = time_to(curve, threshold, pairings)
            row[f"{model}_final_psnr"] = min(curve[-1]["psnr"][p] for p in pairings)
        fast, slow = row["hashgrid_seconds"], row["mlp_seconds"]
        if fast is None:
            row["ratio"], row["ratio_is_lower_bound"] = None, False
        elif slow is None:
            # The baseline never got there: its budget bounds the ratio from below.
            row["ratio"], row["ratio_is_lower_bound"] = runs["mlp"]["seconds"] / max(fast, 1e-9), True
        else:
            row["ratio"], row["ratio_is_lower_bound"] = slow / max(fast, 1e-9), False
        rows.append(row)
    return rows


def plot(runs: dict[str, dict], threshold: float, path: Path) -> None:
    series = {}
    for m, model in enumerate(MODELS):
        curve = runs[model]["curve"]
        for i, pairing in enumerate(curve[0]["psnr"]):
            series[f"{model} {pairing}"] = (
                [point["seconds"] for point in curve],
                [point["psnr"][pairing] for point in curve],
                PALETTE[i],
                m == 1,  # the baseline dashed
            )
    image = line_plot(series, "held-out PSNR against training time (dashed: mlp baseline)", "training seconds", "PSNR (dB)", threshold)
    image.save(path)


def run(config_path: Path, budget: float, interval: float, threshold: float, n_pixels: int, results: Path) -> dict:
    console = make_console()
    base = load_config(config_path)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            runs[model] = train_curve(model_config(base, model, Path(tmp)), budget, interval, n_pixels, console)
            final = runs[model]["curve"][-1]
            console.print(
                f"{model}: {runs[model]['steps']} steps in {runs[model]['seconds']:.0f} s, final PSNR "
                + ", ".join(f"{k} {v:.2f}" for k, v in final["psnr"].items())
            )
    rows = summarise(runs, threshold, budget)

    table = Table(title=f"time to {threshold:g} dB held-out PSNR (training seconds; budget {budget:.0f} s)")
    for column in ("pairing", "fastjoint", "mlp baseline", "ratio"):
        table.add_column(column, justify="left" if column == "pairing" else "right")
    for row in rows:

        def cell(model: str, row: dict = row) -> str:
            seconds = row[f"{model}_seconds"]
            return f"{seconds:.0f} s" if seconds is not None else f"not reached ({row[f'{model}_final_psnr']:.1f} dB)"

        ratio = "n/a" if row["ratio"] is None else (">" if row["ratio_is_lower_bound"] else "") + f"{row['ratio']:.1f}x"
        table.add_row(row["pairing"], cell("hashgrid"), cell("mlp"), ratio)
    console.print(table)
    payload = {
        "config": str(config_path),
        "budget_seconds": budget,
        "interval_seconds": interval,
        "threshold_db": threshold,
        "held_out_pixels_per_pairing": n_pixels,
        "runs": runs,
        "summary": rows,
    }
    path = write_results("time_to_quality", payload, results)
    picture = pictures(results) / path.with_suffix(".png").name
    plot(runs, threshold, picture)
    console.print(f"results: {path} (+ {picture})")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.time_to_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--budget", type=float, default=1200.0, help="training seconds per model")
    parser.add_argument("--interval", type=float, default=15.0, help="training seconds between measurements")
    parser.add_argument("--threshold", type=float, default=25.0, help="PSNR to reach, dB")
    parser.add_argument("--pixels", type=int, default=4096, help="held-out test pixels per pairing")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run(args.config, args.budget, args.interval, args.threshold, args.pixels, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
