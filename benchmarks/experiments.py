"""The paper's three experiments on one target, under the demo's budget, with ground truth.

For each style (recolour, relight, pattern) it trains `configs/<target>-<style>.toml`,
evaluates, analyses the feature space, and renders the transfer; then it writes one table
(markdown + JSON): per style, the PSNR of the three trained pairings, the transfer's PSNR
against ground truth, the no-transfer baseline, the gain, the KL divergence between the two
scenes' features, and the training time; and per style a contact sheet PNG (rows: the
target in its original style, the desired style's ground truth, our transfer).

With `--together`, it also trains the chosen styles in one run (shared encoders and head,
a decoder per style; the config is the single-style configs' data merged) and reports each
transfer trained together beside the same transfer trained alone.

    python -m benchmarks.experiments --target digger
    python -m benchmarks.experiments --target digger --styles recolour relight --together
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw
from rich.table import Table

from benchmarks.common import RESULTS, machine_slug, write_results
from benchmarks.common import console as make_console
from fastjoint.config import load_config, to_toml

REPO = Path(__file__).resolve().parents[1]
STYLES = ("recolour", "relight", "pattern")
PAIRINGS = ("target:original", "reference:original", "reference:style")
SHEET_SCALE = 3
LABEL_WIDTH = 150


def fastjoint(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fastjoint", *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


def run_style(target: str, style: str, output_dir: Path, views: list[int], date: str, results: Path) -> dict:
    config = REPO / "configs" / f"{target}-{style}.toml"
    name = f"{target}-{style}"
    start = time.time()
    fastjoint("train", str(config), "--output-dir", str(output_dir), "--name", name, "--no-render")
    seconds = time.time() - start
    run_dir = output_dir / name
    fastjoint("analyze", str(run_dir))
    fastjoint("render", str(run_dir), "--pairing", f"target:{style}")
    result = json.loads((run_dir / "eval.json").read_text())
    analysis = json.loads((run_dir / "analysis.json").read_text())

    data = REPO / "data" / "generated" / "paper" / target
    sheet = results / f"{machine_slug()}-{date}-experiments-{target}-{style}.png"
    contact_sheet(
        [
            (f"{target}, original", [on_white(data / "original" / "test" / f"r_{v}.png") for v in views]),
            (f"{style}: ground truth", [on_white(data / style / "test" / f"r_{v}.png") for v in views]),
            (f"{style}: fastjoint", [on_white(run_dir / "renders" / f"target_{style}" / f"test_{v:03d}.png") for v in views]),
        ],
        sheet,
    )
    features = results / f"{machine_slug()}-{date}-experiments-{target}-{style}-features.png"
    features.write_bytes((run_dir / "analysis" / "features.png").read_bytes())
    transfer = result["transfers"][f"target:{style}"]
    trained = ("target:original", "reference:original", f"reference:{style}")
    return {
        "style": style,
        "psnr": {p: result["pairings"][name]["psnr"] for p, name in zip(PAIRINGS, trained)},
        "transfer_psnr": transfer["psnr"],
        "transfer_ssim": transfer["ssim"],
        "baseline_psnr": transfer["baseline_psnr"],
        "gain_db": transfer["gain_db"],
        "kl_target_reference": analysis["kl"]["target||reference"] if analysis["kl"] else None,
        "kl_reference_target": analysis["kl"]["reference||target"] if analysis["kl"] else None,
        "train_seconds": result["train_seconds"],
        "command_seconds": seconds,
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
        configs[0],
        name=f"{target}-together",
        output_dir=str(output_dir),
        data=dataclasses.replace(configs[0].data, styles={s: c.data.styles[s] for s, c in zip(styles, configs)}),
    )
    path = output_dir / f"{merged.name}.toml"
    path.write_text(to_toml(merged))
    fastjoint("train", str(path), "--no-render")
    result = json.loads((merged.run_dir / "eval.json").read_text())
    return {
        "styles": styles,
        "psnr": {name: scores["psnr"] for name, scores in result["pairings"].items()},
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="digger", choices=("digger", "robot"))
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--views", type=int, nargs="+", default=[0, 2, 4, 6], help="test views on the contact sheets")
    parser.add_argument("--together", action="store_true", help="also train the chosen styles in one run and compare")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    console = make_console()
    date = time.strftime("%Y-%m-%d")
    fastjoint("scenes", "make", "paper")  # once, untimed
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for style in args.styles:
            with console.status(f"{args.target}: {style}..."):
                rows.append(run_style(args.target, style, Path(tmp), args.views, date, args.results))
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
    kind = f"experiments-{args.target}" + ("-together" if together else "")
    path = write_results(kind, {"target": args.target, "styles": rows, "together": together}, args.results)
    text = markdown(args.target, rows)
    if together:
        text += "\n" + together_markdown(args.target, rows, together)
        console.print(together_markdown(args.target, rows, together))
    path.with_suffix(".md").write_text(text)
    console.print(f"results: {path} (+ .md, contact sheets beside it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
