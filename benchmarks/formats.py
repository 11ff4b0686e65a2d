"""One analogy, three dataset formats: `python -m benchmarks.formats [--config configs/demo.toml]`.

Writes the config's scene-kit datasets (`data.kit`) as Blender, nerfstudio and COLMAP
datasets, trains the same config (same seed) on each with `fastjoint train`, and reports
each pairing's test PSNR per format and its largest difference from Blender's. The loaded
pixels are identical and the rays equal to float error (tests/test_formats.py), so the
PSNRs should agree to well within the issue's 0.3 dB.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rich.table import Table

from benchmarks.common import REPO, RESULTS, console, train_and_score, write_results
from fastjoint.data.formats import FORMATS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.formats", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (a quick check)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "formats", help="runs and datasets go here")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.work = args.work.resolve()  # training runs from the checkout's root

    from fastjoint.config import StyleData, load_config
    from fastjoint.scenes import load_recipe, make_datasets
    from fastjoint.scenes.make import output_folder
    from fastjoint.scenes.recipe import find_recipe

    base = load_config(args.config)
    if not base.data.kit:
        raise SystemExit(f"{args.config}: data.kit is empty; this benchmark needs a scene-kit config")
    recipe = load_recipe(find_recipe(base.data.kit))
    data_root = args.work / "data"
    blender_folder = str(output_folder(recipe, None, Path("data/generated")))
    rows = {}
    for fmt in FORMATS:
        folder = make_datasets(base.data.kit, root=data_root, format=fmt)

        def moved(path: str, key: str, folder: Path = folder) -> str:
            """The same dataset in this format's folder."""
            assert not path or path.startswith(blender_folder), f"{key} = {path} is not under {blender_folder}"
            return str(folder / Path(path).relative_to(blender_folder)) if path else ""

        data = base.data
        styles = {
            name: StyleData(moved(s.reference, f"data.styles.{name}.reference"), moved(s.target, f"data.styles.{name}.target"))
            for name, s in data.styles.items()
        }
        data = dataclasses.replace(
            data, kit="", target=moved(data.target, "data.target"), reference=moved(data.reference, "data.reference"), styles=styles
        )
        config = dataclasses.replace(
            base,
            name=f"{base.name}-{fmt}",
            output_dir=str(args.work / "runs"),
            data=data,
            train=dataclasses.replace(base.train, steps=args.steps or base.train.steps),
        )
        scored = train_and_score(config, Path(config.output_dir), reuse=True)  # a finished run of an earlier call is read
        if scored.command_seconds is not None:
            print(f"{fmt}: trained and evaluated in {scored.command_seconds:.0f} s")
        rows[fmt] = {**scored.psnr, **{name: scores["psnr"] for name, scores in scored.eval["transfers"].items()}}

    pairings = list(rows["blender"])
    table = Table(title=f"PSNR (dB) on the test views, {args.config.name}, by dataset format")
    table.add_column("pairing")
    for fmt in FORMATS:
        table.add_column(fmt, justify="right")
    table.add_column("largest difference", justify="right")
    differences = {}
    for pairing in pairings:
        values = [rows[fmt][pairing] for fmt in FORMATS]
        differences[pairing] = max(abs(v - values[0]) for v in values)
        table.add_row(pairing, *(f"{v:.3f}" for v in values), f"{differences[pairing]:.3f}")
    console().print(table)
    path = write_results("formats", {"config": str(args.config), "psnr": rows, "largest_difference_db": differences}, args.results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
