"""The paper's three experiments (and the local-frame pattern) on one target, under the demo's budget, with ground truth.

For each style (recolour, relight, pattern, stripes) it trains `configs/<target>-<style>.toml`,
evaluates, analyses the feature space, and renders the transfer; then it writes one table
(markdown + JSON): per style, the PSNR of the three trained pairings, the transfer's PSNR
against ground truth, the no-transfer baseline, the gain, the KL divergence between the two
scenes' features, and the training time; and per style a contact sheet PNG (rows: the
target in its original style, the desired style's ground truth, our transfer) and the
feature scatter, in <results>/pictures/ (git ignores it).

With `--together`, it also trains the chosen styles in one run (shared encoders and head,
a decoder per style; the config is the single-style configs' data merged) and reports each
transfer trained together beside the same transfer trained alone.

With `--variant`, every run takes the options of the named variants (VARIANTS: options
measured against the method's defaults), and the results are labelled with them; `--summary`
then gathers one target's variants of one date into one table.

    python -m benchmarks.experiments --target digger
    python -m benchmarks.experiments --target digger --styles recolour relight --together
    python -m benchmarks.experiments --target robot --variant read-only wide
    python -m benchmarks.experiments --summary --target robot
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw
from rich.table import Table

from benchmarks.common import REPO, RESULTS, fastjoint, machine_slug, pictures, train_and_score, write_results
from benchmarks.common import console as make_console
from fastjoint.config import load_config

STYLES = ("recolour", "relight", "pattern", "stripes")
# The options measured against the method (benchmarks/README.md): `fastjoint train` arguments.
# (The retired options' variants, last at commit 233ffe5, are in benchmarks/README.md.)
VARIANTS = {
    "read-only": ("--train.no-desired-shape-features",),
    "wide": ("--model.decoder-hidden", "128"),
    "dim3": ("--model.feature-dim", "3"),
    "dim4": ("--model.feature-dim", "4"),
}
METHOD = "method"  # the label of runs without options
PAIRINGS = ("target:original", "reference:original", "reference:style")
SHEET_SCALE = 3
LABEL_WIDTH = 150


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


def label_of(variants: list[str], seed: int = 0) -> str:
    """`method`, or the variants joined by +, with `-seedN` for a seed other than the configs' 0."""
    return ("+".join(variants) if variants else METHOD) + (f"-seed{seed}" if seed else "")


def run_style(
    target: str, style: str, output_dir: Path, views: list[int], date: str, results: Path, variants: list[str] = (), seed: int = 0
) -> dict:
    config = REPO / "configs" / f"{target}-{style}.toml"
    name = f"{target}-{style}"
    options = [arg for variant in variants for arg in VARIANTS[variant]] + (["--train.seed", str(seed)] if seed else [])
    scored = train_and_score(config, output_dir, name, options)
    run_dir = scored.run_dir
    fastjoint("analyze", str(run_dir))
    fastjoint("render", str(run_dir), "--pairing", f"target:{style}")
    result = scored.eval
    analysis = json.loads((run_dir / "analysis.json").read_text())

    data = REPO / "data" / "generated" / "paper" / target
    label = label_of(list(variants), seed)
    tag = "" if label == METHOD else f"-{label}"
    sheet = pictures(results) / f"{machine_slug()}-{date}-experiments-{target}{tag}-{style}.png"
    contact_sheet(
        [
            (f"{target}, original", [on_white(data / "original" / "test" / f"r_{v}.png") for v in views]),
            (f"{style}: ground truth", [on_white(data / style / "test" / f"r_{v}.png") for v in views]),
            (f"{style}: fastjoint", [on_white(run_dir / "renders" / f"target_{style}" / f"test_{v:03d}.png") for v in views]),
        ],
        sheet,
    )
    features = pictures(results) / f"{machine_slug()}-{date}-experiments-{target}{tag}-{style}-features.png"
    features.write_bytes((run_dir / "analysis" / "features.png").read_bytes())
    transfer = result["transfers"][f"target:{style}"]
    trained = ("target:original", "reference:original", f"reference:{style}")
    return {
        "style": style,
        "variant": label,
        "seed": seed,
        "options": options,
        "psnr": {p: result["pairings"][name]["psnr"] for p, name in zip(PAIRINGS, trained)},
        "transfer_psnr": transfer["psnr"],
        "transfer_ssim": transfer["ssim"],
        "baseline_psnr": transfer["baseline_psnr"],
        "gain_db": transfer["gain_db"],
        "kl_target_reference": analysis["kl"]["target||reference"] if analysis["kl"] else None,
        "kl_reference_target": analysis["kl"]["reference||target"] if analysis["kl"] else None,
        "train_seconds": result["train_seconds"],
        "command_seconds": scored.command_seconds,
        "contact_sheet": sheet.name,
        "features": features.name,
    }


def markdown(target: str, rows: list[dict]) -> str:
    lines = [
        f"| style ({target}) | target:original | reference:original | reference:style | transfer vs truth | no-transfer baseline | gain | KL(t‖r) | training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kl = f"{r['kl_target_reference']:.2f}" if r["kl_target_reference"] is not None else "n/a"
        lines.append(
            f"| {r['style']} | {r['psnr']['target:original']:.2f} | {r['psnr']['reference:original']:.2f} | "
            f"{r['psnr']['reference:style']:.2f} | {r['transfer_psnr']:.2f} | {r['baseline_psnr']:.2f} | "
            f"{r['gain_db']:+.2f} | {kl} | {r['train_seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def run_together(target: str, styles: list[str], output_dir: Path) -> dict:
    """The styles trained in one run; returns each transfer's scores and the run's training time."""
    configs = [load_config(REPO / "configs" / f"{target}-{style}.toml") for style in styles]
    merged = dataclasses.replace(
        configs[0], data=dataclasses.replace(configs[0].data, styles={s: c.data.styles[s] for s, c in zip(styles, configs)})
    )
    scored = train_and_score(merged, output_dir, f"{target}-together")
    result = scored.eval
    return {
        "styles": styles,
        "psnr": scored.psnr,
        "transfers": {name: {k: t[k] for k in ("psnr", "ssim", "baseline_psnr", "gain_db")} for name, t in result["transfers"].items()},
        "train_seconds": result["train_seconds"],
    }


def together_markdown(target: str, rows: list[dict], together: dict) -> str:
    alone = {r["style"]: r for r in rows}
    lines = [
        f"| style ({target}) | transfer alone | transfer together | difference | reference:style alone | together |",
        "|---|---|---|---|---|---|",
    ]
    for style in together["styles"]:
        a, t = alone[style], together["transfers"][f"target:{style}"]
        lines.append(
            f"| {style} | {a['transfer_psnr']:.2f} | {t['psnr']:.2f} | {t['psnr'] - a['transfer_psnr']:+.2f} | "
            f"{a['psnr']['reference:style']:.2f} | {together['psnr'][f'reference:{style}']:.2f} |"
        )
    seconds = sum(alone[s]["train_seconds"] for s in together["styles"])
    lines.append(f"\nTraining: {together['train_seconds']:.0f} s together, {seconds:.0f} s for the runs alone in all.")
    return "\n".join(lines) + "\n"


def seed_spread(target: str, runs: dict[str, dict[str, dict]]) -> str:
    """Per style, each variant measured at more than one seed: the mean transfer, its range, the mean gain."""
    seeds: dict[tuple[str, str], list[dict]] = {}  # (variant without its seed, style) -> rows
    for label, styles in runs.items():
        for style, row in styles.items():
            seeds.setdefault((re.sub(r"-seed\d+$", "", label), style), []).append(row)
    lines = [
        f"| style ({target}) | variant | seeds | transfer vs truth, mean | lowest | highest | gain over no transfer, mean |",
        "|---|---|---|---|---|---|---|",
    ]
    order = sorted((STYLES.index(style), variant != METHOD, variant, style) for variant, style in seeds if style in STYLES)
    for *_, variant, style in order:
        rows = seeds[variant, style]
        if len(rows) < 2:
            continue
        psnrs = [r["transfer_psnr"] for r in rows]
        numbers = ", ".join(str(seed) for seed in sorted(r.get("seed") or 0 for r in rows))
        lines.append(
            f"| {style} | {variant} | {numbers} | {np.mean(psnrs):.2f} | {min(psnrs):.2f} | {max(psnrs):.2f} | "
            f"{np.mean([r['gain_db'] for r in rows]):+.2f} |"
        )
    return "" if len(lines) == 2 else "\n" + "\n".join(lines) + "\n"


def summary(target: str, date: str, results: Path) -> tuple[Path, str]:
    """One table of every variant of `target` measured on `date` (this machine), against the method's runs."""
    prefix = f"{machine_slug()}-{date}-experiments-{target}"
    runs: dict[str, dict[str, dict]] = {}  # variant -> style -> row
    for path in sorted(results.glob(f"{prefix}*.json")):
        table = json.loads(path.read_text())
        if table.get("together"):
            continue
        for row in table["styles"]:
            runs.setdefault(row.get("variant", METHOD), {})[row["style"]] = row
    if METHOD not in runs:
        raise SystemExit(f"{results}/{prefix}.json: no run of the method on {date} to compare with")
    method = runs[METHOD]
    lines = [
        f"| style ({target}) | variant | transfer vs truth | vs method | gain over no transfer | KL(t‖r) | target:original | reference:style |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = [METHOD] + sorted(v for v in runs if v != METHOD)
    for style in STYLES:
        for variant in order:
            row = runs[variant].get(style)
            if row is None:
                continue
            base = method.get(style)
            versus = f"{row['transfer_psnr'] - base['transfer_psnr']:+.2f}" if base and variant != METHOD else ""
            kl = f"{row['kl_target_reference']:.2f}" if row["kl_target_reference"] is not None else "n/a"
            lines.append(
                f"| {style} | {variant} | {row['transfer_psnr']:.2f} | {versus} | {row['gain_db']:+.2f} | {kl} | "
                f"{row['psnr']['target:original']:.2f} | {row['psnr']['reference:style']:.2f} |"
            )
    text = "\n".join(lines) + "\n" + seed_spread(target, runs)
    path = results / f"{prefix}-options.md"
    path.write_text(text)
    return path, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="digger", choices=("digger", "robot"))
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--views", type=int, nargs="+", default=[0, 2, 4, 6], help="test views on the contact sheets")
    parser.add_argument("--together", action="store_true", help="also train the chosen styles in one run and compare")
    parser.add_argument("--variant", nargs="+", default=[], choices=sorted(VARIANTS), help="train every run with these options")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of every run (the configs' is 0)")
    parser.add_argument("--summary", action="store_true", help="only gather this date's variants of --target into one table")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"), help="the date whose results --summary gathers")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    console = make_console()
    if args.summary:
        path, text = summary(args.target, args.date, args.results)
        console.print(text)
        console.print(f"results: {path}")
        return 0
    date = time.strftime("%Y-%m-%d")
    fastjoint("scenes", "make", "paper")  # once, untimed
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for style in args.styles:
            with console.status(f"{args.target}: {style}..."):
                rows.append(run_style(args.target, style, Path(tmp), args.views, date, args.results, args.variant, args.seed))
            console.print(f"{style}: transfer {rows[-1]['transfer_psnr']:.2f} dB, baseline {rows[-1]['baseline_psnr']:.2f} dB")
        together = None
        if args.together:
            with console.status(f"{args.target}: {', '.join(args.styles)} together..."):
                together = run_together(args.target, args.styles, Path(tmp))

    table = Table(title=f"the paper's experiments on the {args.target} (PSNR in dB on the test views)")
    for column in ("style", *PAIRINGS, "transfer", "baseline", "gain", "KL(t||r)", "training"):
        table.add_column(column, justify="left" if column == "style" else "right")
    for r in rows:
        kl = f"{r['kl_target_reference']:.2f}" if r["kl_target_reference"] is not None else "n/a"
        table.add_row(
            r["style"],
            *(f"{r['psnr'][p]:.2f}" for p in PAIRINGS),
            f"{r['transfer_psnr']:.2f}",
            f"{r['baseline_psnr']:.2f}",
            f"{r['gain_db']:+.2f}",
            kl,
            f"{r['train_seconds']:.0f} s",
        )
    console.print(table)
    label = label_of(args.variant, args.seed)
    kind = f"experiments-{args.target}" + (f"-{label}" if label != METHOD else "") + ("-together" if together else "")
    path = write_results(kind, {"target": args.target, "variant": label, "styles": rows, "together": together}, args.results)
    text = markdown(args.target, rows)
    if together:
        text += "\n" + together_markdown(args.target, rows, together)
        console.print(together_markdown(args.target, rows, together))
    path.with_suffix(".md").write_text(text)
    console.print(f"results: {path} (+ .md; contact sheets and feature scatters in {pictures(args.results)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
