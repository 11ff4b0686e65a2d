"""Learned backgrounds: the sky-backdrop experiment against the demo, and the environment map's fit.

    python -m benchmarks.backgrounds [--runs DIR] [--fit-steps 1500]

`sky`: trains configs/sky.toml (the reference's original-style photos over an opaque sky,
learned as an environment map) and configs/demo.toml (the same scenes, every dataset
transparent), or reads the runs already in `--runs DIR` (`DIR/sky`, `DIR/demo`, each with
eval.json), and reports PSNR per pairing, the transfer's gain over the no-transfer baseline,
and samples per ray (metrics.jsonl) in both. The issue's target: `reference:original` and
`reference:recolour` at least 28 dB with the sky, and the gain within 1 dB of the demo's.

`fit`: the environment map, degree-4 spherical harmonics and a constant fitted to a known
sky (a gradient with four small clouds) by Adam on random directions, PSNR on fresh ones.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
from rich.table import Table

from benchmarks.common import REPO, RESULTS, train_and_score, write_results
from benchmarks.common import console as make_console

CONFIGS = {"sky": REPO / "configs" / "sky.toml", "demo": REPO / "configs" / "demo.toml"}


def train_or_read(name: str, runs: Path) -> dict:
    """eval.json and samples per ray of `runs/<name>`, trained first when it has no eval.json."""
    scored = train_and_score(CONFIGS[name], runs, name, reuse=True)
    lines = [json.loads(line) for line in (scored.run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        **scored.scores(),
        "samples_per_ray_last": lines[-1]["samples_per_ray"],
        "samples_per_ray_mean": sum(line["samples_per_ray"] for line in lines) / len(lines),
    }


def sky_function(dirs: torch.Tensor) -> torch.Tensor:  # [N, 3] unit -> [N, 3]
    """A known direction function: a zenith-to-horizon gradient with four small bright clouds."""
    up = dirs[:, 2:3].clamp(min=0.0)
    base = torch.tensor([0.7, 0.8, 0.9]) * (1.0 - up) + torch.tensor([0.2, 0.4, 0.8]) * up
    centres = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0.5], [0, 1, 0.3], [-1, -0.5, 0.8], [0.3, -1, 0.2]]), dim=-1)
    clouds = sum(torch.exp((dirs @ c - 1.0) / 0.01) for c in centres)[:, None]
    return (base + 0.5 * clouds).clamp(0.0, 1.0)


def random_dirs(n: int, generator: torch.Generator) -> torch.Tensor:  # [n, 3] unit
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)


def fit_psnr(function, params: list[torch.Tensor], steps: int, generator: torch.Generator, test_dirs: int = 20000) -> float:
    """`function` of the direction fitted to the sky by Adam on 1,024 random directions a step, as
    training sets it (lr 1e-2); its PSNR on `test_dirs` fresh directions."""
    optimizer = torch.optim.Adam(params, lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    for _ in range(steps):
        dirs = random_dirs(1024, generator)
        loss = torch.nn.functional.mse_loss(function(dirs), sky_function(dirs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = random_dirs(test_dirs, generator)
    with torch.no_grad():
        return -10.0 * math.log10(torch.nn.functional.mse_loss(function(test), sky_function(test)).item())


def fit(steps: int) -> dict[str, float]:
    """PSNR of each direction function after `steps` Adam steps (`fit_psnr`)."""
    from fastjoint.model.encoding import spherical_harmonics
    from fastjoint.render.background import EnvironmentMap

    environment = EnvironmentMap()
    harmonics = torch.zeros(16, 3, requires_grad=True)
    constant = torch.zeros(3, requires_grad=True)
    candidates = {
        "environment map (5 levels, 8x16 to 128x256)": (environment, list(environment.parameters())),
        "spherical harmonics, degree 4": (lambda d: torch.sigmoid(spherical_harmonics(d, 4) @ harmonics), [harmonics]),
        "constant": (lambda d: torch.sigmoid(constant).expand(d.shape[0], 3), [constant]),
    }
    return {name: fit_psnr(function, params, steps, torch.Generator().manual_seed(0)) for name, (function, params) in candidates.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backgrounds", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None, help="folder of runs sky/ and demo/ (trained when missing)")
    parser.add_argument("--fit-steps", type=int, default=1500)
    parser.add_argument("--skip-training", action="store_true", help="only the fit")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = make_console()
    payload: dict = {"fit_steps": args.fit_steps, "fit_psnr": fit(args.fit_steps)}
    table = Table(title=f"fitting a known sky, {args.fit_steps} Adam steps")
    table.add_column("direction function")
    table.add_column("PSNR (dB)", justify="right")
    for name, psnr in payload["fit_psnr"].items():
        table.add_row(name, f"{psnr:.2f}")
    console.print(table)
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            runs = args.runs or Path(tmp)
            payload["runs"] = {name: train_or_read(name, runs) for name in CONFIGS}
        sky, demo = payload["runs"]["sky"], payload["runs"]["demo"]
        table = Table(title="sky backdrop (configs/sky.toml) against transparent (configs/demo.toml)")
        for column in ("measure", "sky", "demo"):
            table.add_column(column, justify="left" if column == "measure" else "right")
        for pairing in sky["psnr"]:
            table.add_row(f"PSNR {pairing}", f"{sky['psnr'][pairing]:.2f}", f"{demo['psnr'][pairing]:.2f}")
        table.add_row(f"PSNR {sky['transfer']} (transfer)", f"{sky['transfer_psnr']:.2f}", f"{demo['transfer_psnr']:.2f}")
        table.add_row("transfer gain (dB)", f"{sky['gain_db']:+.2f}", f"{demo['gain_db']:+.2f}")
        table.add_row(
            "samples per ray, last log / mean", *(f"{r['samples_per_ray_last']:.1f} / {r['samples_per_ray_mean']:.1f}" for r in (sky, demo))
        )
        table.add_row("training seconds", f"{sky['train_seconds']:.0f}", f"{demo['train_seconds']:.0f}")
        console.print(table)
    path = write_results("backgrounds", payload, args.results)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
