"""The README's main job, timed: `fastjoint train` on configs/demo.toml, several times.

Reports, per run and as medians: seconds from the command's start to eval.json (the
issue's budget: at most 5 minutes on 2 CPU cores), seconds of training alone, the whole
command with its renders, and eval.json's PSNR per pairing and transfer gain.

    python -m benchmarks.demo [--runs 3] [--config configs/demo.toml]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.table import Table

from benchmarks.common import RESULTS, median, train_and_score, write_results
from benchmarks.common import console as make_console

REPO = Path(__file__).resolve().parents[1]


def run_once(config: Path, output_dir: Path, index: int) -> dict:
    scored = train_and_score(config, output_dir, f"bench{index}", render=True)
    scores = scored.scores()
    return {
        "seconds_to_eval_json": scored.seconds_to_eval_json,
        "train_seconds": scores.pop("train_seconds"),
        "command_seconds": scored.command_seconds,
        **scores,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = make_console()
    # The datasets are written once, untimed, as on a user's second run.
    subprocess.run([sys.executable, "-m", "fastjoint", "scenes", "make", "demo"], cwd=REPO, check=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            with console.status(f"run {i + 1}/{args.runs} of the main job..."):
                runs.append(run_once(args.config, Path(tmp), i))
            console.print(f"run {i + 1}: {runs[-1]['seconds_to_eval_json']:.0f} s to eval.json")

    summary = {
        "seconds_to_eval_json": median([r["seconds_to_eval_json"] for r in runs]),
        "train_seconds": median([r["train_seconds"] for r in runs]),
        "command_seconds": median([r["command_seconds"] for r in runs]),
        "psnr": {p: median([r["psnr"][p] for r in runs]) for p in runs[0]["psnr"]},
        "transfer_psnr": median([r["transfer_psnr"] for r in runs]),
        "baseline_psnr": median([r["baseline_psnr"] for r in runs]),
        "gain_db": median([r["gain_db"] for r in runs]),
    }
    table = Table(title=f"main job, median of {len(runs)} runs ({args.config.name})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("command start to eval.json", f"{summary['seconds_to_eval_json']:.0f} s")
    table.add_row("training alone", f"{summary['train_seconds']:.0f} s")
    table.add_row("whole command (with renders)", f"{summary['command_seconds']:.0f} s")
    for p, value in summary["psnr"].items():
        table.add_row(f"PSNR {p}", f"{value:.2f} dB")
    table.add_row(f"PSNR {runs[0]['transfer']} (transfer)", f"{summary['transfer_psnr']:.2f} dB")
    table.add_row("no-transfer baseline", f"{summary['baseline_psnr']:.2f} dB")
    table.add_row("transfer gain", f"{summary['gain_db']:+.2f} dB")
    console.print(table)
    path = write_results("demo", {"config": str(args.config), "runs": runs, "median": summary}, args.results)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
