"""A small line plot drawn with Pillow (the benchmarks need no plotting library)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"]


def line_plot(
    series: dict[str, tuple[list[float], list[float], str, bool]],  # name -> (x, y, colour, dashed)
    title: str,
    x_label: str,
    y_label: str,
    hline: float | None = None,
    size: tuple[int, int] = (900, 540),
) -> Image.Image:
    """Lines on linear axes with ticks, a legend and an optional horizontal reference line."""
    width, height = size
    left, right, top, bottom = 70, 230, 40, 50
    xs = [x for s in series.values() for x in s[0]] or [0.0, 1.0]
    ys = [y for s in series.values() for y in s[1] if math.isfinite(y)] or [0.0, 1.0]
    if hline is not None:
        ys.append(hline)
    x0, x1 = 0.0, max(xs) or 1.0
    y0, y1 = math.floor(min(ys)) - 1, math.ceil(max(ys)) + 1
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (width - left - right),
            top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom),
        )

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        u, _ = px(x, y0)
        draw.line([u, height - bottom, u, height - bottom + 5], fill="black")
        draw.text((u - 12, height - bottom + 8), f"{x:.0f}", fill="black")
        y = y0 + (y1 - y0) * i / 5
        _, v = px(x0, y)
        draw.line([left - 5, v, left, v], fill="black")
        draw.text((left - 40, v - 6), f"{y:.1f}", fill="black")
    draw.text((left, 12), title, fill="black")
    draw.text(((width - right + left) // 2 - 40, height - 22), x_label, fill="black")
    draw.text((6, top - 30), y_label, fill="black")
    if hline is not None:
        _, v = px(x0, hline)
        for u in range(left, width - right, 12):
            draw.line([u, v, min(u + 6, width - right), v], fill="grey")
        draw.text((width - right - 60, v - 14), f"{hline:g}", fill="grey")
    for row, (name, (x, y, colour, dashed)) in enumerate(series.items()):
        _polyline(draw, [px(a, b) for a, b in zip(x, y) if math.isfinite(b)], colour, dashed)
        ly = top + 10 + 18 * row
        _polyline(draw, [(width - right + 12, ly + 6), (width - right + 36, ly + 6)], colour, dashed)
        draw.text((width - right + 42, ly), name, fill="black")
    return image


def _polyline(draw: ImageDraw.ImageDraw, points: list, colour: str, dashed: bool, dash: float = 6.0) -> None:
    """A line through `points`; dashed lines keep their on/off rhythm across the vertices."""
    if not dashed:
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        return
    travelled = 0.0  # distance along the line so far: on while (travelled // dash) is even
    for p, q in zip(points, points[1:]):
        length = math.dist(p, q)
        done = 0.0
        while done < length:
            step = min(dash - travelled % dash, length - done)
            if int(travelled // dash) % 2 == 0:
                a, b = done / length, (done + step) / length
                draw.line(
                    [(p[0] + (q[0] - p[0]) * a, p[1] + (q[1] - p[1]) * a), (p[0] + (q[0] - p[0]) * b, p[1] + (q[1] - p[1]) * b)],
                    fill=colour,
                    width=2,
                )
            done += step
            travelled += step
