"""Click to recolour in the viewer: the time from the click to the recoloured frame, and how close
the recolour comes to the scene kit's ground truth, beside `fastjoint restyle` from photos.

Starts `fastjoint view` on a copy of RUN (the copy takes the saved style and the restyled one)
and drives it in headless Chromium (benchmarks/browser.py), in the `original` style at
`--size` pixels high (moving and resting alike):

- the colour: the repainted material as the style's reference photos show it (the median
  colour of the training pixels that differ between reference/original and reference/STYLE:
  what a user would take with an eyedropper from those photos), typed into "Recolour to";
  the panel's falloff and "Keep shading" stay as they start (`--falloff` sets the first);
- click to frame: a click on the middle of the yellow paint in the view (on the demo the
  digger's paint, which the style `recolour` turns blue), to the status line of the
  recoloured frame, on the page's own clock; then Undo (median of `--clicks`);
- the last click's recolour is saved (Save style: the decoder fitted to the edited table)
  and its fit error read back from the style file.

Then, in this process, target:STYLE's test views are scored against the kit's ground truth
(data/generated/<kit>/target/STYLE) under both renderers: the recolour as shown (the
original decoder with the recolour blended in), at the falloff used and at others, the
saved decoder, `fastjoint restyle RUN STYLE-photos reference/STYLE` (timed, as a user runs
it), the style trained jointly (when the run has it) and the no-transfer baseline.

    python -m benchmarks.recolour --run runs/demo [--style recolour] [--size 256] [--clicks 7]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from benchmarks.browser import SCENE_TOP, Page, Status, Viewer, open_viewer
from benchmarks.common import RESULTS, fastjoint, machine_slug, pictures, write_results
from benchmarks.common import console as make_console
from fastjoint.data import load_split
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.run import load_run, use_renderer
from fastjoint.scoring import load_test_views, score_transfer
from fastjoint.viewer.recolour import Recolour, RecolouredDecoder

FALLOFFS = (0.1, 0.15, 0.25, 0.4, 0.6)  # the recolour's falloff, scored beside the one clicked with
CHANGED = 0.3  # a kit pixel belongs to the repainted material when the style moves it by this much (RGB summed, 0-1)


def repainted(original: Path, styled: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels a style repaints in a dataset's views ([n, H, W] bool) and the styled views' colours [n, H, W, 3]."""
    before, after = load_split(original, split), load_split(styled, split)
    white = torch.ones(3)
    a, b = before.on_background(white), after.on_background(white)
    opaque = torch.ones(a.shape[:3], dtype=torch.bool)
    if before.images.shape[-1] == 4:
        opaque = (before.images[..., 3] > 0.99) & (after.images[..., 3] > 0.99)
    return ((a - b).abs().sum(-1) > CHANGED) & opaque, b


def photographed_colour(reference_original: Path, reference_style: Path) -> tuple[float, float, float]:
    """The median colour of the repainted material in the style's reference training photos, in [0, 1]."""
    mask, colours = repainted(reference_original, reference_style, "train")
    red, green, blue = colours[mask].median(dim=0).values.tolist()
    return (red, green, blue)


def click_point(page: Page, size: int) -> tuple[float, float]:
    """The page point nearest the middle of the yellow-ish paint in the current view (the material to click)."""
    shot = page.scene_pixels().astype(int)
    red, green, blue = shot[..., 0], shot[..., 1], shot[..., 2]
    paint = (red > 140) & (green > 90) & (blue < 100) & (red > blue + 80)
    inner = paint.copy()
    for _ in range(6):  # away from the paint's edges
        inner[1:-1, 1:-1] &= inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
    rows, cols = (inner if inner.any() else paint).nonzero()
    if len(rows) == 0:
        raise SystemExit("no paint to click in the view (is the run's original style yellow-painted, as the demo's?)")
    nearest = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return float(cols[nearest]), float(rows[nearest] + SCENE_TOP)


def steady(page: Page, size: int) -> Status:
    """Orbits a little and waits for the sharp frame at rest (the browser's own camera reports are over by then)."""
    before = page.statuses()[-1]
    _, end = page.drag(6)
    return page.wait_status(lambda s: s.frame > before.frame and s.height == size and s.at > end, "a frame at rest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recolour", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run (e.g. runs/demo); it is copied, never written")
    parser.add_argument("--style", default="recolour", help="the kit style whose ground truth scores the recolour")
    parser.add_argument("--size", type=int, default=256, help="the viewer's moving and resting size")
    parser.add_argument("--clicks", type=int, default=7)
    parser.add_argument("--falloff", type=float, default=None, help="the panel's falloff (default: the viewer's)")
    parser.add_argument("--renderer", choices=("fast", "exact"), default="fast", help="the viewer's")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = make_console()
    prefix = f"{machine_slug()}-{datetime.date.today().isoformat()}-recolour"

    source = load_run(args.run, "cpu")
    if args.style not in source.config.data.styles:
        raise SystemExit(
            f"--style: {args.run} has no style '{args.style}' with datasets (its styles: {', '.join(source.config.data.styles)})"
        )
    data = source.config.data.styles[args.style]
    reference_original, reference_style = Path(source.config.data.reference), Path(data.reference)
    truth_path = Path(data.target)
    colour = photographed_colour(reference_original, reference_style)
    rgb = tuple(round(c * 255) for c in colour)
    console.print(f"the {args.style} paint in its reference photos: rgb{rgb}")
    del source

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / args.run.name
        shutil.copytree(args.run, run_dir, ignore=shutil.ignore_patterns("renders", "analysis"))
        saved = "clicked"
        viewer = Viewer(run_dir, "--moving-size", str(args.size), "--resting-size", str(args.size), "--renderer", args.renderer)
        clicks, server_ms = [], []
        try:
            with open_viewer(viewer.url()) as page:
                page.wait_status(lambda s: s.height == args.size, "the first frame")
                page.choose("Style", ORIGINAL)
                steady(page, args.size)
                page.fill("Recolour to", f"rgb{rgb}")
                if args.falloff is not None:
                    page.fill("Falloff", str(args.falloff))
                point = click_point(page, args.size)
                shots = pictures(args.results)
                page.save_screenshot(shots / f"{prefix}-before.png")
                for i in range(args.clicks):
                    last = page.statuses()[-1].frame
                    clicked = page.now()
                    page.page.mouse.click(*point)
                    shown = page.wait_status(lambda s, last=last: s.frame > last, "the frame after the click")
                    if shown.style != "painted":
                        raise SystemExit(f"the frame after the click is not the recolour: {shown}")
                    clicks.append(shown.at - clicked)
                    server_ms.append(shown.ms)
                    time.sleep(0.3)
                    if i == args.clicks - 1:
                        break
                    last = page.statuses()[-1].frame
                    page.click("Undo")
                    page.wait_status(lambda s, last=last: s.frame > last and s.style == ORIGINAL, "the frame after Undo")
                page.save_screenshot(shots / f"{prefix}-recoloured.png")
                page.fill("Save as", saved)
                page.click("Save style")
                style_file = run_dir / "styles" / f"{saved}.pt"
                for _ in range(1200):
                    if style_file.is_file():
                        break
                    page.page.wait_for_timeout(100)
                else:
                    raise SystemExit(f"Save style wrote no {style_file}:\n{viewer.output}")
        finally:
            status = viewer.stop()
        if status != 143:
            raise SystemExit(f"fastjoint view exited with {status}:\n{viewer.output}")

        photos = f"{args.style}-photos"
        start = time.perf_counter()
        fastjoint("restyle", str(run_dir), photos, str(reference_style), "--target-truth", str(truth_path), "--no-render")
        restyle_seconds = time.perf_counter() - start

        scores: dict[str, dict[str, float]] = {}
        fit: dict = {}
        recolour = None
        for renderer in ("exact", "fast"):
            run = load_run(run_dir)
            use_renderer(run, renderer)
            info = run.stored[saved].info
            fit = info["fit"]
            (edit,) = info["edits"]
            recolour = Recolour(
                tuple(edit["centre"]), float(edit["radius"]), tuple(edit["colour"]), float(edit["shade"]), bool(edit["keep_shading"])
            )
            if max(abs(a - b) for a, b in zip(recolour.colour, colour, strict=True)) > 1.5 / 255:
                raise SystemExit(f"the colour typed into 'Recolour to' did not take: the recolour is {recolour.colour}")
            truth = load_test_views(run, truth_path, "target")
            base = run.built.model.decoders[ORIGINAL]
            shading = "shading kept" if recolour.keep_shading else "flat colour"
            rows = {f"recolour as shown (falloff {recolour.radius:g}, {shading})": recolour}
            for keep in (True, False):
                for r in FALLOFFS:
                    if abs(r - recolour.radius) > 1e-9 or keep != recolour.keep_shading:
                        label = f"  falloff {r:g}, {'shading kept' if keep else 'flat colour'}"
                        rows[label] = recolour._replace(radius=r, keep_shading=keep)
            for label, edited in rows.items():
                run.built.model.decoders["as-shown"] = RecolouredDecoder(base, [edited])
                scores.setdefault(label, {})[renderer] = score_transfer(run, Pairing("target", "as-shown"), truth).psnr
            named = {f"recolour saved (decoder fitted, {fit['mean_error']:.1f}/255 from the table)": saved, "restyle from photos": photos}
            if args.style in run.pairings.styles:
                named[f"{args.style} trained jointly"] = args.style
            for label, style in named.items():
                result = score_transfer(run, Pairing("target", style), truth)
                scores.setdefault(label, {})[renderer] = result.psnr
                scores.setdefault("no-transfer baseline", {})[renderer] = result.baseline_psnr

    summary = {
        "click_to_frame_ms_median": statistics.median(clicks),
        "click_to_frame_ms": clicks,
        "server_ms_median": statistics.median(server_ms),
        "colour": list(colour),
        "recolour": {**recolour._asdict(), "centre": list(recolour.centre), "colour": list(recolour.colour)},
        "saved_fit": fit,
        "restyle_seconds": restyle_seconds,
        "psnr": scores,
    }
    table = Table(title=f"click to recolour, {args.run} ({args.renderer} renderer, {args.size} px)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row(f"click to the recoloured frame (median of {len(clicks)})", f"{summary['click_to_frame_ms_median']:.0f} ms", "<= 100 ms")
    table.add_row("  server time of that frame (median)", f"{summary['server_ms_median']:.0f} ms", "")
    table.add_row("saved decoder from the edited table (mean, max)", f"{fit['mean_error']:.1f}, {fit['max_error']:.0f} /255", "")
    table.add_row("saved decoder's frame against the shown one", f"{fit.get('frame_psnr', float('nan')):.1f} dB", "")
    table.add_row("restyle from photos (the command, wall)", f"{restyle_seconds:.1f} s", "")
    console.print(table)
    psnr = Table(title=f"target:{args.style} test views against the kit's ground truth (PSNR, dB)")
    psnr.add_column("style")
    psnr.add_column("exact", justify="right")
    psnr.add_column("fast", justify="right")
    for label, values in scores.items():
        psnr.add_row(label, f"{values['exact']:.2f}", f"{values['fast']:.2f}")
    console.print(psnr)
    payload = {"run": str(args.run), "style": args.style, "size": args.size, "renderer": args.renderer, "median": summary}
    path = write_results("recolour" if args.size == 256 else f"recolour-{args.size}px", payload, args.results)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
