"""A sweep's table of results: summary.json and summary.md.

One row per point of the grid without its seed (a group); each figure of the runs' eval.json
(every trained pairing's PSNR and SSIM, every transfer's PSNR, SSIM, no-transfer baseline and
gain) as its mean, lowest and highest over the group's finished seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from fastjoint.files import write_json, write_text
from fastjoint.sweepfile import GridPoint

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


class Spread(NamedTuple):
    """A figure over seeds."""

    mean: float
    low: float
    high: float
    n: int


def figures(eval_json: dict[str, Any]) -> dict[str, float]:
    """The figures of one eval.json, flat: `target:original psnr`, `target:recolour gain_db`, ..."""
    out: dict[str, float] = {}
    for name, scores in eval_json.get("pairings", {}).items():
        out.update({f"{name} {key}": float(scores[key]) for key in ("psnr", "ssim")})
    for name, scores in eval_json.get("transfers", {}).items():
        out.update({f"{name} {key}": float(scores[key]) for key in ("psnr", "ssim", "baseline_psnr", "gain_db")})
    return out


def spread(values: Sequence[float]) -> Spread:
    return Spread(math.fsum(values) / len(values), min(values), max(values), len(values))


def summarise(folder: Path, points: list[GridPoint], status: dict[str, str]) -> dict[str, Any]:
    """summary.json's content: the groups' figures over their finished seeds, and each run's status."""
    groups: dict[str, list[GridPoint]] = {}
    for point in points:
        groups.setdefault(point.group, []).append(point)
    rows = []
    for group, members in groups.items():
        per_seed = {}
        for point in members:
            path = folder / point.name / "eval.json"
            if status.get(point.name) == "done" and path.is_file():
                per_seed[point.config.train.seed] = figures(json.loads(path.read_text()))
        names = [name for name in next(iter(per_seed.values()), {}) if all(name in f for f in per_seed.values())]
        values = {key: v for key, v in members[0].values.items() if key != "train.seed"}
        rows.append(
            {
                "group": group,
                "values": values,
                "seeds": sorted(per_seed),
                "figures": {name: spread([f[name] for f in per_seed.values()])._asdict() for name in names},
            }
        )
    counts = {state: sum(1 for p in points if status.get(p.name) == state) for state in ("done", "failed", "pending")}
    return {"runs": len(points), **counts, "status": {p.name: status.get(p.name, "pending") for p in points}, "groups": rows}


def markdown(summary: dict[str, Any]) -> str:
    """summary.md: one table per figure kind (PSNR, gain, SSIM), a row per group, "mean (low to high)"."""
    lines = [
        f"# Sweep summary: {summary['done']} of {summary['runs']} runs done, {summary['failed']} failed",
        "",
        "Each figure: the mean over the finished seeds (lowest to highest).",
    ]
    names = list(dict.fromkeys(name for row in summary["groups"] for name in row["figures"]))
    for kind, title in (("psnr", "PSNR (dB)"), ("gain_db", "transfer gain over no transfer (dB)"), ("ssim", "SSIM")):
        columns = [n for n in names if n.endswith(" " + kind)]
        if not columns:
            continue
        lines += ["", f"## {title}", "", "| group | seeds | " + " | ".join(c[: -len(kind) - 1] for c in columns) + " |"]
        lines.append("|---|---|" + "---|" * len(columns))
        for row in summary["groups"]:
            cells = []
            for column in columns:
                figure = row["figures"].get(column)
                digits = 4 if kind == "ssim" else 2
                cells.append(
                    "" if figure is None else f"{figure['mean']:.{digits}f} ({figure['low']:.{digits}f} to {figure['high']:.{digits}f})"
                )
            seeds = ", ".join(str(s) for s in row["seeds"]) or "none yet"
            lines.append(f"| {row['group']} | {seeds} | " + " | ".join(cells) + " |")
    failed = [name for name, state in summary["status"].items() if state == "failed"]
    if failed:
        lines += ["", "Failed: " + ", ".join(failed)]
    return "\n".join(lines) + "\n"


def write_summary(folder: Path, points: list[GridPoint], status: dict[str, str]) -> dict[str, Any]:
    """Writes summary.json and summary.md in the sweep folder; returns the summary."""
    summary = summarise(folder, points, status)
    write_json(folder / SUMMARY_JSON, summary)
    write_text(folder / SUMMARY_MD, markdown(summary))
    return summary
