"""The benchmark suite: `python -m benchmarks [--only NAME ...] [--quick]`.

Runs each benchmark in turn (each prints its table and writes JSON under
benchmarks/results/, named by machine and date). `--quick` runs tiny budgets, to check that
the suite works, not to measure; `--config` runs the config-driven benchmarks on another
config (a quick run wants a small one).
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from benchmarks.common import RESULTS

REPO = Path(__file__).resolve().parents[1]

# name -> (full arguments, quick arguments); {config} and {results} are filled in.
SUITE = {
    "demo": (["--config", "{config}", "--runs", "3"], ["--config", "{config}", "--runs", "1"]),
    "experiments": (["--target", "digger"], None),  # trains the paper's configs: no quick form
    "throughput": (
        ["--config", "{config}"],
        ["--config", "{config}", "--warmup", "3", "--steps", "2", "--mlp-steps", "1", "--frames", "1"],
    ),
    "composite": (["--repeats", "15"], ["--sizes", "64x8", "--repeats", "2"]),
    "hashgrid": (["--repeats", "5"], ["--grids", "demo", "--points", "1000", "--repeats", "2"]),
    "restyle": (
        ["--config", "{config}", "--runs", "3"],
        ["--config", "{config}", "--style", "again", "--from-style", "recolour", "--runs", "1", "--steps", "20", "--train-steps", "20"],
    ),
    "time_to_quality": (
        ["--config", "{config}"],
        ["--config", "{config}", "--budget", "4", "--interval", "2", "--pixels", "256", "--threshold", "15"],
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SUITE), default=list(SUITE))
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the suite, measures nothing")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for name in args.only:
        full, quick = SUITE[name]
        chosen = quick if args.quick else full
        if chosen is None:
            print(f"{name}: skipped (no quick form)")
            continue
        filled = [a.format(config=args.config, results=args.results) for a in chosen] + ["--results", str(args.results)]
        print(f"== {name}: python -m benchmarks.{name} {' '.join(filled)}")
        start = time.time()
        importlib.import_module(f"benchmarks.{name}").main(filled)
        print(f"== {name}: {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
