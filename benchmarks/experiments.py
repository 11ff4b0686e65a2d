"""The paper's three experiments (and the local-frame pattern) on one or both targets, under the demo's budget, with ground truth, over seeds.

For each target and style (recolour, relight, pattern, stripes) and each seed it trains
`configs/<target>-<style>.toml`, evaluates it and analyses its feature space. The runs are
one sweep (`fastjoint sweep`, Ray tasks on a local cluster): the script writes the sweep file,
`<work>/<name>.toml`, and runs it; the runs live in the sweep folder `<work>/<name>/`, so a
stopped benchmark continues where it stopped when the same command is run again (finished
runs are kept, interrupted ones resume). `benchmarks/sweeps/kit.toml` is the sweep of
`--target digger robot --styles recolour relight --seeds 0 1 2`.

It then writes one table (markdown + JSON) made from the sweep's `summary.json`: per target
and style, the PSNR of the three trained pairings, the transfer's PSNR against ground truth,
the no-transfer baseline, the gain, and the KL divergence between the two scenes' features
(from each run's analysis.json), each as the mean, lowest and highest over the seeds. With
`--pictures`, per target and style a contact sheet PNG (rows: the target in its original style,
the desired style's ground truth, our transfer) and the feature scatter of the first seed's
run, in <results>/pictures/ (git ignores it).

With `--variant`, every run takes the config values of the named variants (VARIANTS: options
measured against the method's defaults): in the sweep file they are axes of one value each,
so each run's name carries them (`digger-recolour,desired_shape_features=false,seed1`); the
variant's runs are a sweep of their own (the sweep's name carries its label).

With `--together`, it also trains the chosen styles of each target in one run at the first seed
(shared encoders and head, a decoder per style; the config is the single-style configs' data
merged; not part of the sweep) and reports each transfer trained together beside the same
transfer trained alone.

    python -m benchmarks.experiments --target digger
    python -m benchmarks.experiments --target digger robot --styles recolour relight --seeds 0 1 2
    python -m benchmarks.experiments --target robot --variant read-only wide --seeds 0 1
    python -m benchmarks.experiments --target digger --styles recolour relight --together
    python -m benchmarks.experiments --target digger --summary   # the tables from the runs finished so far
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw
from rich.table import Table

from benchmarks.common import REPO, RESULTS, checkout_environment, fastjoint, machine_slug, pictures, train_and_score, write_results
from benchmarks.common import console as make_console
from fastjoint.config import load_config
from fastjoint.schema import toml_value
from fastjoint.sweepfile import load_sweep
from fastjoint.sweepsummary import spread

TARGETS = ("digger", "robot")
STYLES = ("recolour", "relight", "pattern", "stripes")
# The options measured against the method (benchmarks/README.md): config keys and their values.
# (The retired options' variants, last at commit 233ffe5, are in benchmarks/README.md.)
VARIANTS: dict[str, dict[str, Any]] = {
    "read-only": {"train.desired_shape_features": False},
    "wide": {"model.decoder_hidden": 128},
    "dim3": {"model.feature_dim": 3},
    "dim4": {"model.feature_dim": 4},
    "no-cover": {"train.cover_weight": 0.0},  # the method as published, before issue 21's default
    "smooth": {"train.style_smoothness": 1e-3},  # the roughness term (off by default: benchmarks/README.md)
    "no-analogy": {"train.analogy_steps": 0},  # the default without the analogy fit (benchmarks/README.md, "The analogy fit")
}
METHOD = "method"  # the label of runs without options
AFTER = ("eval", "analyze")  # what each run of the sweep does once trained
WORK = REPO / "runs" / "sweeps"  # where the sweep folders live by default (git ignores runs/)
PAIRINGS = ("target:original", "reference:original", "reference:style")
SHEET_SCALE = 3
LABEL_WIDTH = 150


# --- the sweep ---------------------------------------------------------------------------


def label_of(variants: Sequence[str]) -> str:
    """`method`, or the variants joined by +."""
    return "+".join(variants) if variants else METHOD


def variant_values(variants: Sequence[str]) -> dict[str, Any]:
    """The config values of a set of variants, merged; two variants that set one key are refused."""
    values: dict[str, Any] = {}
    for variant in variants:
        for key, value in VARIANTS[variant].items():
            if key in values and values[key] != value:
                raise SystemExit(f"--variant {' '.join(variants)}: two variants set {key}")
            values[key] = value
    return values


def sweep_name(targets: Sequence[str], styles: Sequence[str], variants: Sequence[str]) -> str:
    """The default sweep (folder) name: one per grid, so that the same command finds its runs again."""
    return f"experiments-{'+'.join(targets)}-{'+'.join(styles)}" + (f"-{label_of(variants)}" if variants else "")


def config_of(target: str, style: str) -> str:
    """A target and style's config, as a sweep file run from the checkout names it."""
    return f"configs/{target}-{style}.toml"


def sweep_toml(
    name: str,
    work: Path,
    configs: Sequence[str],
    seeds: Sequence[int],
    values: dict[str, Any],
    after: Sequence[str] = AFTER,
    comment: str = "",
) -> str:
    """A sweep file: the configs x the seeds, each run with the variant's `values` (axes of one value)."""
    work = Path(work).resolve()
    output_dir = work.relative_to(REPO).as_posix() if work.is_relative_to(REPO) else str(work)
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [
        f"name = {toml_value(name)}",
        f"output_dir = {toml_value(output_dir)}  # a relative path is read from the checkout, where the sweep runs",
        "configs = [\n" + "".join(f"    {toml_value(c)},\n" for c in configs) + "]",
        f"seeds = {toml_value(list(seeds))}",
        f"after = {toml_value(list(after))}",
    ]
    if values:
        lines += ["", "[axes]  # the variant: one value each"] + [
            f"{toml_value(key)} = [{toml_value(value)}]" for key, value in values.items()
        ]
    return "\n".join(lines) + "\n"


def run_sweep(sweep_file: Path, cpus_per_run: float = 1.0, summary_only: bool = False) -> int:
    """`fastjoint sweep SWEEP_FILE` from the checkout, its progress and its failures on this terminal; its exit status.

    Ctrl-C reaches the sweep too (it checkpoints its runs): this waits for it to end, as it does
    on SIGTERM, which it passes on.
    """
    command = [sys.executable, "-m", "fastjoint", "sweep", str(sweep_file), "--cpus-per-run", str(cpus_per_run)]
    command += ["--summary"] if summary_only else []
    child = subprocess.Popen(command, cwd=REPO, env=checkout_environment())
    previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue  # the sweep got the Ctrl-C as well: it stops its runs, which checkpoint
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.kill()
            child.wait()


@dataclasses.dataclass
class Experiment:
    """A sweep run and its table."""

    sweep_file: Path
    folder: Path
    summary: dict
    rows: list[dict]
    exit_status: int  # fastjoint sweep's: 0 every run done, 1 some failed


def experiment(
    grid: dict[str, tuple[str, str]],
    seeds: Sequence[int],
    values: dict[str, Any],
    work: Path,
    name: str,
    cpus_per_run: float = 1.0,
    summary_only: bool = False,
    comment: str = "",
) -> Experiment:
    """Writes the sweep file `<work>/<name>.toml` of `grid` (config path, as read from the checkout
    -> (target, style)) at `seeds` with `values`, runs it (or, `summary_only`, only rewrites its
    summary) and makes the table from its summary.json."""
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sweep_file = work / f"{name}.toml"
    sweep_file.write_text(sweep_toml(name, work, list(grid), seeds, values, comment=comment))
    code = run_sweep(sweep_file, cpus_per_run, summary_only)
    if code in (130, 143):
        raise SystemExit(code)  # the sweep said it stopped, and how to continue
    if code not in (0, 1):
        raise SystemExit(f"fastjoint sweep {sweep_file} failed (exit status {code})")
    folder = work / name
    summary = json.loads((folder / "summary.json").read_text())
    return Experiment(sweep_file, folder, summary, rows_of(summary, sweep_file, grid), code)


def rows_of(summary: dict, sweep_file: Path, grid: dict[str, tuple[str, str]]) -> list[dict]:
    """The table from a sweep's summary.json: per target and style (a group with at least one
    finished seed), each figure as {mean, low, high, n} over the seeds, and the KL divergence
    from the finished runs' analysis.json, likewise."""
    with contextlib.chdir(REPO):  # the sweep file names its configs from the checkout
        sweep, points = load_sweep(sweep_file)
    folder = REPO / sweep.folder  # output_dir is read from the checkout (an absolute one stays as it is)
    names = {(p.group, p.config.train.seed): p.name for p in points}
    rows = []
    for group in summary["groups"]:
        if not group["seeds"]:
            continue
        target, style = grid[group["values"]["config"]]
        figures = group["figures"]
        folders = [folder / names[group["group"], seed] for seed in group["seeds"]]
        kl = {}
        for direction in ("target||reference", "reference||target"):
            analyses = [json.loads((run / "analysis.json").read_text()).get("kl") for run in folders]
            kl[direction] = spread([a[direction] for a in analyses])._asdict() if all(analyses) else None
        trained = ("target:original", "reference:original", f"reference:{style}")
        rows.append(
            {
                "target": target,
                "style": style,
                "group": group["group"],
                "seeds": group["seeds"],
                "runs": [str(run) for run in folders],
                "psnr": {pairing: figures[f"{name} psnr"] for pairing, name in zip(PAIRINGS, trained)},
                "transfer_psnr": figures[f"target:{style} psnr"],
                "transfer_ssim": figures[f"target:{style} ssim"],
                "baseline_psnr": figures[f"target:{style} baseline_psnr"],
                "gain_db": figures[f"target:{style} gain_db"],
                "kl_target_reference": kl["target||reference"],
                "kl_reference_target": kl["reference||target"],
            }
        )
    return rows


# --- the tables ----------------------------------------------------------------------------


def cell(figure: dict | None, sign: bool = False) -> str:
    """A figure over seeds: "mean (low to high)", or the value alone from one seed."""
    if figure is None:
        return "n/a"
    form = "{:+.2f}" if sign else "{:.2f}"
    if figure["n"] == 1:
        return form.format(figure["mean"])
    return f"{form.format(figure['mean'])} ({form.format(figure['low'])} to {form.format(figure['high'])})"


COLUMNS = ("target", "style", "seeds", *PAIRINGS, "transfer vs truth", "no-transfer baseline", "gain", "KL(t‖r)")


def cells(row: dict) -> list[str]:
    return [
        row["target"],
        row["style"],
        ", ".join(str(s) for s in row["seeds"]),
        *(cell(row["psnr"][p]) for p in PAIRINGS),
        cell(row["transfer_psnr"]),
        cell(row["baseline_psnr"]),
        cell(row["gain_db"], sign=True),
        cell(row["kl_target_reference"]),
    ]


def markdown(rows: list[dict], label: str = METHOD) -> str:
    lines = [
        f"Variant: {label}. PSNR in dB on the test views; each figure the mean over the seeds (lowest to highest).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- pictures --------------------------------------------------------------------------------


def on_white(path: Path) -> np.ndarray:
    image = iio.imread(path).astype(np.float64) / 255.0
    if image.shape[-1] == 4:
        image = image[..., :3] * image[..., 3:] + (1.0 - image[..., 3:])
    return image[..., :3]


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], path: Path) -> None:
    """Labelled rows of images, enlarged (nearest neighbour) for legibility."""
    strips = []
    for label, images in rows:
        strip = np.concatenate(images, axis=1)
        strip = strip.repeat(SHEET_SCALE, axis=0).repeat(SHEET_SCALE, axis=1)
        canvas = Image.new("RGB", (LABEL_WIDTH + strip.shape[1], strip.shape[0] + 4), "white")
        canvas.paste(Image.fromarray((strip * 255 + 0.5).astype(np.uint8)), (LABEL_WIDTH, 2))
        ImageDraw.Draw(canvas).text((6, strip.shape[0] // 2 - 6), label, fill="black")
        strips.append(np.asarray(canvas))
    iio.imwrite(path, np.concatenate(strips, axis=0))


def draw_pictures(row: dict, config: str, views: Sequence[int], results: Path, date: str, label: str = METHOD) -> None:
    """The contact sheet and the feature scatter of a row's first seed's run, into <results>/pictures/
    (the transfer's test views rendered first, if that run has not rendered them); their names go into `row`."""
    run_dir = Path(row["runs"][0])
    target, style = row["target"], row["style"]
    renders = run_dir / "renders" / f"target_{style}"
    if not all((renders / f"test_{v:03d}.png").is_file() for v in views):
        fastjoint("render", str(run_dir), "--pairing", f"target:{style}")
    data = load_config(REPO / config).data
    original, truth = REPO / data.target, REPO / data.styles[style].target  # absolute paths stay as they are
    tag = "" if label == METHOD else f"-{label}"
    sheet = pictures(results) / f"{machine_slug()}-{date}-experiments-{target}{tag}-{style}.png"
    contact_sheet(
        [
            (f"{target}, original", [on_white(original / "test" / f"r_{v}.png") for v in views]),
            (f"{style}: ground truth", [on_white(truth / "test" / f"r_{v}.png") for v in views]),
            (f"{style}: fastjoint", [on_white(renders / f"test_{v:03d}.png") for v in views]),
        ],
        sheet,
    )
    features = pictures(results) / f"{machine_slug()}-{date}-experiments-{target}{tag}-{style}-features.png"
    features.write_bytes((run_dir / "analysis" / "features.png").read_bytes())
    row["contact_sheet"], row["features"] = sheet.name, features.name


# --- several styles in one run ------------------------------------------------------------------


def run_together(target: str, styles: list[str], seed: int, values: dict[str, Any], output_dir: Path, label: str = METHOD) -> dict:
    """The styles trained in one run (at `seed`, with the variant's `values`); returns each transfer's
    scores and the run's training time. A run already there is read, not trained again."""
    configs = [load_config(REPO / config_of(target, style)) for style in styles]
    merged = dataclasses.replace(
        configs[0], data=dataclasses.replace(configs[0].data, styles={s: c.data.styles[s] for s, c in zip(styles, configs)})
    )
    for key, value in {**values, "train.seed": seed}.items():
        section, field = key.split(".")
        merged = dataclasses.replace(merged, **{section: dataclasses.replace(getattr(merged, section), **{field: value})})
    scored = train_and_score(merged, output_dir, f"{target}-{'+'.join(styles)}-{label}-seed{seed}", reuse=True)
    result = scored.eval
    return {
        "target": target,
        "styles": styles,
        "seed": seed,
        "run": str(scored.run_dir),
        "psnr": scored.psnr,
        "transfers": {name: {k: t[k] for k in ("psnr", "ssim", "baseline_psnr", "gain_db")} for name, t in result["transfers"].items()},
        "train_seconds": result["train_seconds"],
    }


def together_markdown(rows: list[dict], together: dict) -> str:
    target, seed = together["target"], together["seed"]
    alone = {r["style"]: r for r in rows if r["target"] == target}
    lines = [
        f"| style ({target}) | transfer alone, mean over seeds | together, seed {seed} | difference | reference:style alone | together |",
        "|---|---|---|---|---|---|",
    ]
    for style in together["styles"]:
        if style not in alone:
            continue
        a, t = alone[style], together["transfers"][f"target:{style}"]
        lines.append(
            f"| {style} | {cell(a['transfer_psnr'])} | {t['psnr']:.2f} | {t['psnr'] - a['transfer_psnr']['mean']:+.2f} | "
            f"{cell(a['psnr']['reference:style'])} | {together['psnr'][f'reference:{style}']:.2f} |"
        )
    lines.append(f"\nTraining together: {together['train_seconds']:.0f} s (one run).")
    return "\n".join(lines) + "\n"


# --- the command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--target", nargs="+", default=["digger"], choices=TARGETS, help="one target or both")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed of the runs: each target and style at each")
    parser.add_argument("--variant", nargs="+", default=[], choices=sorted(VARIANTS), help="train every run with these config values")
    parser.add_argument("--work", type=Path, default=WORK, help="the folder of the sweep file and the sweep folder (default: runs/sweeps)")
    parser.add_argument("--name", help="the sweep's name (default: experiments-<targets>-<styles>[-<variants>])")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs each run takes (fastjoint sweep's)")
    parser.add_argument("--summary", action="store_true", help="train nothing: the tables from the runs finished so far")
    parser.add_argument("--pictures", action="store_true", help="contact sheets and feature scatters of each first seed's run")
    parser.add_argument("--views", type=int, nargs="+", default=[0, 2, 4, 6], help="test views on the contact sheets")
    parser.add_argument("--together", action="store_true", help="also train each target's chosen styles in one run and compare")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    targets, styles, seeds = list(dict.fromkeys(args.target)), list(dict.fromkeys(args.styles)), list(dict.fromkeys(args.seeds))
    values, label = variant_values(args.variant), label_of(args.variant)
    name = args.name or sweep_name(targets, styles, args.variant)
    grid = {config_of(target, style): (target, style) for target in targets for style in styles}
    argv_line = " ".join(["python -m benchmarks.experiments", *(sys.argv[1:] if argv is None else argv)])
    args.results.mkdir(parents=True, exist_ok=True)
    console = make_console()
    done = experiment(grid, seeds, values, args.work, name, args.cpus_per_run, args.summary, comment=f"Written by {argv_line}")
    console.print(f"sweep file: {done.sweep_file}\nsweep folder: {done.folder}")
    rows = done.rows
    if not rows:
        raise SystemExit(f"{done.folder}: no run has finished yet")
    date = time.strftime("%Y-%m-%d")
    if args.pictures:
        configs = {(t, s): c for c, (t, s) in grid.items()}
        for row in rows:
            with console.status(f"{row['target']}, {row['style']}: pictures..."):
                draw_pictures(row, configs[row["target"], row["style"]], args.views, args.results, date, label)
    together = []
    if args.together and not args.summary:
        for target in targets:
            with console.status(f"{target}: {', '.join(styles)} together..."):
                together.append(run_together(target, styles, seeds[0], values, args.work / "together", label))

    table = Table(title=f"the paper's experiments, {label} (PSNR in dB on the test views; mean over the seeds, lowest to highest)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("target", "style", "seeds") else "right")
    for row in rows:
        table.add_row(*cells(row))
    console.print(table)
    kind = f"experiments-{'+'.join(targets)}" + (f"-{label}" if label != METHOD else "") + ("-together" if together else "")
    payload = {
        "targets": targets,
        "styles": styles,
        "seeds": seeds,
        "variant": label,
        "values": values,
        "sweep_file": str(done.sweep_file),
        "sweep": str(done.folder),
        "runs": {key: done.summary[key] for key in ("runs", "done", "failed", "pending")},
        "rows": rows,
        "together": together or None,
    }
    path = write_results(kind, payload, args.results)
    text = markdown(rows, label)
    for one in together:
        console.print(together_markdown(rows, one))
        text += "\n" + together_markdown(rows, one)
    path.with_suffix(".md").write_text(text)
    where = f"; contact sheets and feature scatters in {pictures(args.results)}" if args.pictures else ""
    console.print(f"results: {path} (+ .md{where})")
    if done.exit_status:
        console.print(f"{done.summary['failed']} of {done.summary['runs']} runs failed (named above); the table holds the others")
    return done.exit_status


if __name__ == "__main__":
    raise SystemExit(main())
