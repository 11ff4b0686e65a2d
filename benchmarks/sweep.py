"""What Ray costs a run: one short training through `fastjoint sweep` against `fastjoint train` alone.

Both train the same config (the demo's data, `--steps` steps) on the same threads (`--cpus`:
the training alone's OMP_NUM_THREADS, the sweep's --cpus-per-run) and evaluate it, from a
fresh run folder, timed from command start to exit (medians of `--runs`, alternating, in one
session): `fastjoint train CONFIG --no-render`, and `fastjoint sweep` of a sweep file with
that one config, one seed and `after = ["eval"]` (a local Ray cluster started and stopped
each time). The difference is the overhead of a sweep per run on this machine; a sweep of
many runs pays Ray's start once, so the per-run figure is an upper bound.

    python -m benchmarks.sweep --runs 3 --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from benchmarks.common import REPO, checkout_environment, console, median, write_results
from fastjoint.config import load_config, to_toml


def timed(args: list[str], cwd: Path, threads: int | None = None) -> float:
    environment = checkout_environment(**({} if threads is None else {"OMP_NUM_THREADS": str(threads)}))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fastjoint", *args], cwd=cwd, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"fastjoint {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="threads of the training alone, --cpus-per-run of the sweep's")
    args = parser.parse_args(argv)
    out = console()
    base = load_config(args.config)
    # The demo's datasets, once, untimed.
    if base.data.kit:
        timed(["scenes", "make", base.data.kit], REPO)
    train_seconds, sweep_seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for index in range(args.runs):
            config = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=args.steps))
            path = work / f"run{index}.toml"
            path.write_text(to_toml(config))
            with out.status(f"run {index + 1}/{args.runs}: fastjoint train..."):
                train_seconds.append(
                    timed(["train", str(path), "--no-render", "--output-dir", str(work / "runs"), "--name", f"alone{index}"], REPO)
                )
            sweep_file = work / f"sweep{index}.toml"
            sweep_file.write_text(f'name = "one{index}"\noutput_dir = "{work / "sweeps"}"\nconfigs = ["{path}"]\nafter = ["eval"]\n')
            with out.status(f"run {index + 1}/{args.runs}: fastjoint sweep..."):
                sweep_seconds.append(timed(["sweep", str(sweep_file), "--cpus-per-run", str(args.cpus)], REPO))
    alone, swept = median(train_seconds), median(sweep_seconds)
    title = f"one {args.steps}-step run of {args.config.name} on {args.cpus} threads, command start to exit (median of {args.runs})"
    table = Table(title=title)
    for column in ("how", "seconds", "each run"):
        table.add_column(column, justify="left" if column == "how" else "right")
    table.add_row("fastjoint train", f"{alone:.1f}", ", ".join(f"{s:.1f}" for s in train_seconds))
    table.add_row("fastjoint sweep (1 run, local Ray)", f"{swept:.1f}", ", ".join(f"{s:.1f}" for s in sweep_seconds))
    table.add_row("overhead", f"{swept - alone:+.1f}", f"{swept / alone:.2f}x")
    out.print(table)
    path = write_results(
        "sweep-overhead",
        {
            "config": str(args.config),
            "steps": args.steps,
            "train_seconds": train_seconds,
            "sweep_seconds": sweep_seconds,
            "median_train": alone,
            "median_sweep": swept,
            "overhead_seconds": swept - alone,
        },
    )
    out.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
