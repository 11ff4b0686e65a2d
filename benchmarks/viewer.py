"""The viewer in a real browser: frames per second while moving, style-swap and painting latency.

Starts `fastjoint view RUN` and drives it in headless Chromium (benchmarks/browser.py, the
browser tests' driver); every time is the page's own clock, from the input (a mouse move,
a click) to the moment the status line of the frame that shows its effect arrives.

- frames/s while moving: frames at the moving size whose status arrives while the mouse
  orbits the camera, over the drag's duration;
- style swap: from choosing a style in the dropdown to its first frame (median of `--swaps`);
- painted style: from clicking Paint to the first frame in the painted style (median of `--paints`).

One viewer is started for every renderer and moving size asked for (default: both renderers
at 64, 128, 256 and 512 px), and the server's time per moving frame gives each one's rendering
rays/s, so the fast and the exact renderer are compared in the same invocation.

Screenshots go to benchmarks/results/pictures/<machine>-<date>-viewer-<renderer>-<size>-*.png
(git ignores the folder).

    python -m benchmarks.viewer --run runs/demo [--moving-sizes 64 128 256 512] [--renderers fast exact]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

from rich.table import Table

from benchmarks.browser import Viewer, not_blank, open_viewer
from benchmarks.common import RESULTS, machine_slug, pictures, write_results
from benchmarks.common import console as make_console

REPO = Path(__file__).resolve().parents[1]


def measure(args: argparse.Namespace, renderer: str, moving_size: int, prefix: str) -> dict:
    """One `fastjoint view` at one renderer and moving size, driven in the browser; its figures."""
    shots = {}
    folder = pictures(args.results)
    prefix = f"{prefix}-{renderer}-{moving_size}"
    viewer = Viewer(args.run, "--moving-size", str(moving_size), "--resting-size", str(args.resting_size), "--renderer", renderer)
    try:
        with open_viewer(viewer.url()) as page:
            first = page.wait_status(lambda s: s.height == args.resting_size, "the first sharp frame")
            assert not_blank(page.scene_pixels()) > 0.01, "the 3D view is blank"
            shots["first"] = folder / f"{prefix}-{first.style}.png"
            page.save_screenshot(shots["first"])

            # Frames per second while the camera moves.
            before = page.statuses()[-1].frame
            start, end = page.drag(args.moves)
            moving = [s for s in page.statuses() if s.frame > before and s.height == moving_size and start <= s.at <= end]
            fps = len(moving) / ((end - start) / 1000.0)
            server_ms = statistics.median([s.ms for s in moving]) if moving else float("nan")
            pixels = statistics.median([s.width * s.height for s in moving]) if moving else float("nan")
            page.wait_status(lambda s: s.frame > before and s.height == args.resting_size and s.at > end, "a sharp frame after the orbit")

            # Style swaps between the run's styles.
            page.page.get_by_label("Style", exact=True).click()
            options = [o.strip() for o in page.page.get_by_role("option").all_inner_texts()]
            page.page.keyboard.press("Escape")
            swaps = []
            for i in range(args.swaps):
                style = options[(options.index(first.style) + 1 + i) % len(options)]
                if style == page.statuses()[-1].style:
                    style = options[(options.index(style) + 1) % len(options)]
                last = page.statuses()[-1].frame
                clicked = page.choose("Style", style)
                shown = page.wait_status(lambda s, style=style, last=last: s.frame > last and s.style == style, f"style {style}")
                swaps.append(shown.at - clicked)
                time.sleep(0.3)
                if style not in shots:
                    shots[style] = folder / f"{prefix}-{style}.png"
                    page.save_screenshot(shots[style])

            # Painting: a disc around the middle of the plane, in three colours.
            paints = []
            for i, (centre, colour) in enumerate(
                zip(("0.0", "0.3", "-0.3"), ("rgb(20, 180, 60)", "rgb(200, 40, 200)", "rgb(250, 250, 20)"), strict=False)
            ):
                if i >= args.paints:
                    break
                page.fill("Centre", centre)
                page.fill("Radius", "0.5")
                page.fill("Colour", colour)
                last = page.statuses()[-1].frame
                clicked = page.click("Paint")
                shown = page.wait_status(lambda s, last=last: s.frame > last and s.style == "painted", "the painted style", tries=1200)
                paints.append(shown.at - clicked)
                time.sleep(0.3)
            if paints:
                shots["painted"] = folder / f"{prefix}-painted.png"
                page.save_screenshot(shots["painted"])
    finally:
        status = viewer.stop()
    if status != 143:  # stopped by SIGTERM
        raise SystemExit(f"fastjoint view exited with {status}:\n{viewer.output}")
    return {
        "renderer": renderer,
        "moving_size": moving_size,
        "moving_fps": fps,
        "moving_frames": len(moving),
        "moving_pixels": pixels,
        "moving_server_ms_median": server_ms,
        "server_rays_per_second": pixels / (server_ms / 1000.0) if moving and server_ms > 0 else None,
        "swap_ms_median": statistics.median(swaps) if swaps else None,
        "swap_ms": swaps,
        "paint_ms_median": statistics.median(paints) if paints else None,
        "paint_ms": paints,
        "screenshots": {k: str(v.relative_to(REPO)) if v.is_relative_to(REPO) else str(v) for k, v in shots.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.viewer", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run (e.g. runs/demo)")
    parser.add_argument("--moving-sizes", type=int, nargs="+", default=[64, 128, 256, 512], help="one viewer per size")
    parser.add_argument("--resting-size", type=int, default=512)
    parser.add_argument(
        "--renderers", choices=("fast", "exact"), nargs="+", default=["fast", "exact"], help="one viewer per renderer and size"
    )
    parser.add_argument("--moves", type=int, default=150, help="mouse moves of the orbit (about 20 ms apart)")
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--paints", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = make_console()
    prefix = f"{machine_slug()}-{datetime.date.today().isoformat()}-viewer"
    rows = []
    for renderer in args.renderers:
        for size in args.moving_sizes:
            with console.status(f"fastjoint view --renderer {renderer} --moving-size {size} in the browser..."):
                rows.append(measure(args, renderer, size, prefix))

    table = Table(title=f"fastjoint view {args.run} in headless Chromium (resting {args.resting_size} px)")
    for column in ("renderer", "moving size", "frames/s moving", "server ms/frame", "server rays/s", "style swap", "Paint"):
        table.add_column(column, justify="left" if column == "renderer" else "right")
    for r in rows:
        table.add_row(
            r["renderer"],
            f"{r['moving_size']} ({r['moving_frames']} frames)",
            f"{r['moving_fps']:.1f}",
            f"{r['moving_server_ms_median']:.0f}",
            f"{r['server_rays_per_second']:,.0f}" if r["server_rays_per_second"] else "-",
            f"{r['swap_ms_median']:.0f} ms" if r["swap_ms_median"] is not None else "-",
            f"{r['paint_ms_median']:.0f} ms" if r["paint_ms_median"] is not None else "-",
        )
    console.print(table)
    for size in args.moving_sizes:  # the renderers against each other at each size, from the same invocation
        by = {r["renderer"]: r for r in rows if r["moving_size"] == size}
        if {"fast", "exact"} <= set(by) and by["fast"]["server_rays_per_second"] and by["exact"]["server_rays_per_second"]:
            ratio = by["fast"]["server_rays_per_second"] / by["exact"]["server_rays_per_second"]
            console.print(f"{size} px: fast renders {ratio:.1f}x the exact renderer's rays/s in the server")
    payload = {"run": str(args.run), "resting_size": args.resting_size, "targets": {"moving_fps_256": 10}, "rows": rows}
    path = write_results("viewer", payload, args.results)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
