"""`fastjoint restyle` against training the same style jointly from scratch.

A new style for a trained run: `fastjoint restyle RUN STYLE REFERENCE --target-truth TRUTH`
(a new decoder against the frozen encoders; wall time of the whole command, start to
exit, with the transfer's scoring and renders), against a run of the same config that
trains the style jointly from the start (`[data.styles.STYLE]` added). Reported: the
command's wall time (the issue's budget: at most 20 s on 2 CPU cores), the transfer's
PSNR against ground truth for both, and the difference (target: within 1 dB).

    python -m benchmarks.restyle [--config configs/demo.toml] [--style red] [--runs 3] [--analogy-steps N]

On the demo, STYLE's datasets are the scene kit's (data/generated/demo/{reference,target}/red).
`--run` and `--joint-run` reuse trained runs (the base config's, and the one with the style);
without them both are trained here, which takes minutes. `--from-style S` restyles a style
the config already trains (its datasets, its joint run = the base run): the quick form.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from rich.table import Table

from benchmarks.common import REPO, RESULTS, fastjoint, median, train_and_score, write_results
from benchmarks.common import console as make_console
from fastjoint.config import StyleData, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restyle", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--style", default="red")
    parser.add_argument("--reference", type=Path, help="default: data/generated/<kit>/reference/<style>")
    parser.add_argument("--truth", type=Path, help="default: data/generated/<kit>/target/<style>")
    parser.add_argument("--from-style", help="restyle the datasets of a style the config already trains")
    parser.add_argument("--run", type=Path, help="a trained run of --config")
    parser.add_argument("--joint-run", type=Path, help="a trained run of --config with the style added")
    parser.add_argument("--runs", type=int, default=3, help="restyle commands timed")
    parser.add_argument("--steps", type=int, default=None, help="restyle --steps (default: the command's)")
    parser.add_argument("--analogy-steps", type=int, default=None, help="restyle --analogy-steps (default: the run's; 0: no analogy fit)")
    parser.add_argument("--train-steps", type=int, default=None, help="override train.steps of the trainings")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = make_console()
    config = load_config(args.config)
    if args.train_steps:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=args.train_steps))
    if config.data.kit:
        fastjoint("scenes", "make", config.data.kit)  # the datasets, once, untimed
    if args.from_style:
        source = config.data.styles[args.from_style]
        reference, truth = Path(source.reference), Path(source.target)
    else:
        kit = Path(config.data.target).parents[1]  # data/generated/<kit>/target/original
        reference = args.reference or kit / "reference" / args.style
        truth = args.truth or kit / "target" / args.style

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = args.run
        if base is None:
            with console.status("training the base run (minutes)..."):
                base = train_and_score(config, tmp / "runs", "base").run_dir
        joint = args.joint_run or (base if args.from_style else None)
        joint_style = args.from_style or args.style
        if joint is None:
            styles = {**config.data.styles, args.style: StyleData(reference=str(reference), target=str(truth))}
            with_style = dataclasses.replace(config, data=dataclasses.replace(config.data, styles=styles))
            with console.status(f"training the joint run with {args.style} (minutes)..."):
                joint = train_and_score(with_style, tmp / "runs", "joint").run_dir
        joint_json = json.loads((joint / "eval.json").read_text())
        joint_eval = joint_json["transfers"][f"target:{joint_style}"]

        runs = []
        for i in range(args.runs):
            copy = tmp / f"restyle{i}"
            shutil.copytree(base, copy, ignore=shutil.ignore_patterns("renders", "styles", "analysis"))
            command = ["restyle", str(copy), args.style, str(reference), "--target-truth", str(truth)]
            if args.steps:
                command += ["--steps", str(args.steps)]
            if args.analogy_steps is not None:
                command += ["--analogy-steps", str(args.analogy_steps)]
            start = time.perf_counter()
            fastjoint(*command)
            seconds = time.perf_counter() - start
            info = torch.load(copy / "styles" / f"{args.style}.pt", weights_only=True)["info"]
            runs.append(
                {
                    "command_seconds": seconds,
                    "fit_seconds": info["seconds"],
                    "analogy_steps": info["analogy_steps"],
                    "transfer": info["transfer"],
                    "train_psnr": info["train_psnr"],
                }
            )
            console.print(f"restyle {i + 1}: {seconds:.1f} s, transfer {info['transfer']['psnr']:.2f} dB")

    summary = {
        "command_seconds": median([r["command_seconds"] for r in runs]),
        "fit_seconds": median([r["fit_seconds"] for r in runs]),
        "restyle_psnr": median([r["transfer"]["psnr"] for r in runs]),
        "joint_psnr": joint_eval["psnr"],
        "baseline_psnr": joint_eval["baseline_psnr"],
    }
    summary["difference_db"] = summary["restyle_psnr"] - summary["joint_psnr"]
    table = Table(title=f"restyle {args.style} vs joint training, median of {len(runs)} ({args.config.name})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("restyle command, start to exit", f"{summary['command_seconds']:.1f} s", "<= 20 s")
    table.add_row("  of which caching + fitting", f"{summary['fit_seconds']:.1f} s", "")
    table.add_row("  analogy fit steps", str(runs[0]["analogy_steps"]), "")
    table.add_row(f"transfer target:{args.style}, restyle", f"{summary['restyle_psnr']:.2f} dB", "")
    table.add_row(f"transfer target:{joint_style}, joint from scratch", f"{summary['joint_psnr']:.2f} dB", "")
    table.add_row("restyle - joint", f"{summary['difference_db']:+.2f} dB", ">= -1 dB")
    table.add_row("no-transfer baseline", f"{summary['baseline_psnr']:.2f} dB", "")
    console.print(table)
    payload = {
        "config": str(args.config),
        "style": args.style,
        "analogy_steps": runs[0]["analogy_steps"],
        "reference": str(reference),
        "truth": str(truth),
        "joint_run": str(joint) if args.joint_run else "trained here",
        "joint_train_seconds": joint_json["train_seconds"],
        "runs": runs,
        "median": summary,
    }
    path = write_results("restyle", payload, args.results)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
