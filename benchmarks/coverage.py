"""Does coverage mean something? The transfer's error where the reference does not cover the target, against where it does.

    python -m benchmarks.coverage RUN_OR_SWEEP [...] [--renderer exact] [--results DIR]

Each argument is a run folder (it holds config.toml) or a folder of runs (a sweep's: every
subfolder that holds config.toml and eval.json, i.e. the finished runs). Run it from the folder the runs were trained
from (their configs name their datasets relative to it). For each run it builds the
reference's coverage (fastjoint.coverage), and for each transfer with ground truth renders the
target's test views in that style and splits their visible pixels (the model's opacity past
0.95) into uncovered and covered ones; it reports the uncovered share and the mean per-pixel
squared error (over the three channels, against the ground truth on the transfer's backdrop) in
each part, and their ratio. Per group of runs (the run's name without its `,seedN`) it pools the
pixels of every seed and gives the mean of the runs' ratios. Issue 21's target: on the kit's
relight, the error in uncovered pixels at least twice that in covered ones.

    python -m benchmarks.coverage runs/sweeps/kit
    python -m benchmarks.coverage runs/greencab-relight runs/digger-relight
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import torch
from rich.table import Table

from benchmarks.common import RESULTS, write_results
from benchmarks.common import console as make_console
from fastjoint.coverage import WARN_SHARE, reference_coverage, view_coverage
from fastjoint.errors import UserError
from fastjoint.run import RENDERERS, load_run
from fastjoint.scoring import backdrop, check_same_views, load_test_views


def run_folders(paths: list[Path]) -> list[Path]:
    """The run folders named, or found one level inside the folders named (a sweep's)."""
    runs: list[Path] = []
    for path in paths:
        if (path / "config.toml").is_file():
            runs.append(path)
            continue
        found = sorted(p for p in path.iterdir() if (p / "config.toml").is_file() and (p / "eval.json").is_file()) if path.is_dir() else []
        if not found:
            raise SystemExit(f"{path}: neither a run folder (config.toml) nor a folder of runs")
        runs += found
    return runs


def group_of(run_dir: Path) -> str:
    """A run's name without its seed: `digger-relight,seed3` -> `digger-relight`."""
    return re.sub(r",?seed\d+", "", run_dir.name) or run_dir.name


@torch.no_grad()
def measure(run_dir: Path, renderer: str = "exact") -> list[dict]:
    """One row per transfer with ground truth of one run: the share, and the squared error in uncovered and covered pixels."""
    run = load_run(run_dir)
    run.built.use_renderer(renderer)
    start = time.perf_counter()
    coverage = reference_coverage(run)
    if coverage is None:
        return []
    original = load_test_views(run, run.dataset(run.pairings.trained[0]), "target")
    masks = [view_coverage(run.built, coverage, pose, original.camera) for pose in original.poses]
    rows = []
    for pairing in run.pairings.transfers:
        dataset = run.dataset(pairing)
        if dataset is None:
            continue
        truth = load_test_views(run, dataset, "target")
        check_same_views(truth, original)
        behind = backdrop(run, pairing, truth)
        expected = truth.on_background(behind)
        sums = {"uncovered": [0.0, 0], "covered": [0.0, 0]}
        for index, (image, mask) in enumerate(zip(run.render(pairing, truth.poses, truth.camera), masks, strict=True)):
            error = (image - expected[index]).square().mean(dim=-1)  # [H, W] per-pixel squared error
            for part, where in (("uncovered", mask.uncovered), ("covered", mask.visible & ~mask.uncovered)):
                sums[part][0] += float(error[where].sum())
                sums[part][1] += int(where.sum())
        mse = {part: (total / count if count else None) for part, (total, count) in sums.items()}
        ratio = mse["uncovered"] / mse["covered"] if mse["uncovered"] is not None and mse["covered"] else None
        visible = sums["uncovered"][1] + sums["covered"][1]
        rows.append(
            {
                "run": str(run_dir),
                "group": group_of(run_dir),
                "transfer": pairing.name,
                "share": sums["uncovered"][1] / visible if visible else 0.0,
                "pixels_uncovered": sums["uncovered"][1],
                "pixels_covered": sums["covered"][1],
                "sse_uncovered": sums["uncovered"][0],
                "sse_covered": sums["covered"][0],
                "mse_uncovered": mse["uncovered"],
                "mse_covered": mse["covered"],
                "ratio": ratio,
                "reference_samples": coverage.samples,
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    return rows


def pooled(rows: list[dict]) -> list[dict]:
    """Per group and transfer: every seed's pixels pooled, and the mean (and range) of the runs' ratios."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["group"], row["transfer"]), []).append(row)
    out = []
    for (group, transfer), members in groups.items():
        uncovered, covered = sum(r["pixels_uncovered"] for r in members), sum(r["pixels_covered"] for r in members)
        mse_u = sum(r["sse_uncovered"] for r in members) / uncovered if uncovered else None
        mse_c = sum(r["sse_covered"] for r in members) / covered if covered else None
        ratios = [r["ratio"] for r in members if r["ratio"] is not None]
        out.append(
            {
                "group": group,
                "transfer": transfer,
                "runs": len(members),
                "share_mean": statistics.mean(r["share"] for r in members),
                "share_min": min(r["share"] for r in members),
                "share_max": max(r["share"] for r in members),
                "mse_uncovered": mse_u,
                "mse_covered": mse_c,
                "ratio_pooled": mse_u / mse_c if mse_u is not None and mse_c else None,
                "ratio_mean": statistics.mean(ratios) if ratios else None,
                "ratio_min": min(ratios) if ratios else None,
                "ratio_max": max(ratios) if ratios else None,
            }
        )
    return out


def number(value: float | None, digits: str = ".5f") -> str:
    return "n/a" if value is None else format(value, digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, or folders of runs (a sweep's)")
    parser.add_argument("--renderer", choices=RENDERERS, default="exact")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--name", default="coverage", help="the results file's name (after machine and date)")
    args = parser.parse_args(argv)
    rows = []
    for run_dir in run_folders(args.runs):
        try:
            rows += measure(run_dir, args.renderer)
        except UserError as error:
            raise SystemExit(f"{run_dir}: {error}") from None
    groups = pooled(rows)
    console = make_console()
    table = Table(title="Transfer error (mean per-pixel squared error) in uncovered vs covered target pixels")
    for column in ("run", "transfer", "uncovered share", "MSE uncovered", "MSE covered", "ratio"):
        table.add_column(column, justify="left" if column in ("run", "transfer") else "right")
    for row in rows:
        table.add_row(
            Path(row["run"]).name,
            row["transfer"],
            f"{row['share']:.1%}",
            number(row["mse_uncovered"]),
            number(row["mse_covered"]),
            number(row["ratio"], ".2f"),
        )
    for group in groups:
        table.add_row(
            f"{group['group']} (pooled, {group['runs']} runs)",
            group["transfer"],
            f"{group['share_mean']:.1%}",
            number(group["mse_uncovered"]),
            number(group["mse_covered"]),
            f"{number(group['ratio_pooled'], '.2f')} (runs {number(group['ratio_min'], '.2f')} to {number(group['ratio_max'], '.2f')})",
        )
    console.print(table)
    path = write_results(args.name, {"renderer": args.renderer, "warn_share": WARN_SHARE, "runs": rows, "groups": groups}, args.results)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
