"""What every benchmark shares: the machine's name, medians, and where results go."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import sys
from pathlib import Path

import torch
from rich.console import Console

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """The machine a result was measured on."""
    info = {
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_slug() -> str:
    """A short name for file names: the GPU's name, else the CPU core count."""
    if torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    return f"cpu{os.cpu_count()}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(name: str, payload: dict, folder: Path = RESULTS) -> Path:
    """<folder>/<machine>-<date>-<name>.json (folder: benchmarks/results by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    path = folder / f"{machine_slug()}-{date}-{name}.json"
    path.write_text(json.dumps({"benchmark": name, "date": date, "machine": machine(), **payload}, indent=2) + "\n")
    return path


def console() -> Console:
    """A console whose tables keep their columns when the output goes to a file."""
    return Console(width=None if sys.stdout.isatty() else 160)
