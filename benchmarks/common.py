"""What every benchmark shares: the machine's name, medians, where results and pictures go, and
training a run then reading its scores (`train_and_score`)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console

from fastjoint.config import Config, load_config, to_toml

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
# Results are numbers: benchmarks/results/ keeps JSON and Markdown. Pictures (contact sheets,
# feature scatters, curves, screenshots) go to <results>/pictures/, which git ignores; only
# these, the ones benchmarks/README.md shows, are kept in benchmarks/results/ itself
# (tests/test_benchmarks.py checks that no other PNG is there).
PICTURES = "pictures"
KEPT_PICTURES = (
    "cpu2-2026-11-26-experiments-digger-recolour.png",
    "cpu2-2026-11-26-experiments-digger-relight.png",
    "cpu2-2026-11-26-experiments-digger-pattern.png",
    "cpu2-2026-11-27-experiments-digger-stripes.png",
    "cpu2-2026-11-27-experiments-digger-read-only-pattern.png",
    "cpu2-2026-11-27-experiments-digger-position-recolour.png",
    "cpu2-2026-11-26-time_to_quality.png",
    "cpu2-2026-11-27-time_to_quality.png",
    "cpu2-2026-11-27-viewer-recolour.png",
    "cpu2-2026-11-27-viewer-original.png",
    "cpu2-2026-11-27-viewer-painted.png",
    "cpu2-2026-11-27-viewer-native-grid-recolour.png",
    "cpu2-2026-11-27-viewer-native-grid-original.png",
    "cpu2-2026-11-27-viewer-native-grid-painted.png",
)


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


def pictures(results: Path = RESULTS) -> Path:
    """The folder a benchmark writes its pictures to: <results>/pictures (git ignores it)."""
    folder = results / PICTURES
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def checkout_environment(**extra: str) -> dict[str, str]:
    """This process's environment with the checkout first on PYTHONPATH (so `python -m fastjoint` runs its code)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **extra)


def fastjoint(*args: str) -> subprocess.CompletedProcess:
    """`python -m fastjoint ARGS` from the checkout, its output captured; a failure stops the benchmark with its stderr."""
    done = subprocess.run([sys.executable, "-m", "fastjoint", *args], cwd=REPO, env=checkout_environment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"fastjoint {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done


@dataclasses.dataclass
class Scored:
    """A trained run: its folder, its eval.json, and how long its `fastjoint train` took."""

    run_dir: Path
    eval: dict
    command_seconds: float | None = None  # None: read from an earlier run, not trained here
    seconds_to_eval_json: float | None = None

    @property
    def psnr(self) -> dict[str, float]:
        """The test PSNR of each trained pairing."""
        return {pairing: scores["psnr"] for pairing, scores in self.eval["pairings"].items()}

    def transfer(self, name: str | None = None) -> tuple[str, dict]:
        """A transfer's scores (the first one when unnamed)."""
        if name is None:
            name = next(iter(self.eval["transfers"]))
        return name, self.eval["transfers"][name]

    def scores(self, transfer: str | None = None) -> dict:
        """Training seconds, PSNR per pairing, and a transfer's PSNR, no-transfer baseline and gain."""
        name, scores = self.transfer(transfer)
        return {
            "train_seconds": self.eval["train_seconds"],
            "psnr": self.psnr,
            "transfer": name,
            "transfer_psnr": scores["psnr"],
            "baseline_psnr": scores["baseline_psnr"],
            "gain_db": scores["gain_db"],
        }


def kit_analogy(target: Path, name: str, output_dir: Path, target_downscale: int = 0) -> Config:
    """The kit's digger recolour analogy (configs/digger-recolour.toml) with `target` as its target and no
    ground truth for the transfer: how a capture of one's own is trained against the kit's reference."""
    base = load_config(REPO / "configs" / "digger-recolour.toml")
    style = base.data.styles["recolour"]
    data = dataclasses.replace(
        base.data,
        target=str(target),
        target_downscale=target_downscale,
        reference=str(REPO / base.data.reference),
        styles={"recolour": dataclasses.replace(style, reference=str(REPO / style.reference), target="")},
    )
    return dataclasses.replace(base, name=name, output_dir=str(output_dir), data=data)


def train_and_score(
    config: Path | Config,
    output_dir: Path,
    name: str | None = None,
    options: Sequence[str] = (),
    render: bool = False,
    reuse: bool = False,
) -> Scored:
    """`fastjoint train` one run as `output_dir/name` and read its eval.json.

    `config`: a TOML file, or a Config (written to `output_dir/name.toml` first); `name`
    defaults to the config's own. `options`: more `fastjoint train` arguments. `render`: also render
    the transfers, as the command does by default. `reuse`: a run that already has an
    eval.json is read, not trained again.
    """
    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(config, Config):
        name = name or config.name
        path = output_dir / f"{name}.toml"
        path.write_text(to_toml(dataclasses.replace(config, name=name, output_dir=str(output_dir))))
        args = [str(path)]
    else:
        name = name or load_config(config).name
        args = [str(config.resolve()), "--output-dir", str(output_dir), "--name", name]
    run_dir = output_dir / name
    evaluation = run_dir / "eval.json"
    if reuse and evaluation.is_file():
        return Scored(run_dir, json.loads(evaluation.read_text()))
    start = time.time()
    fastjoint("train", *args, *([] if render else ["--no-render"]), *options)
    seconds = time.time() - start
    return Scored(run_dir, json.loads(evaluation.read_text()), seconds, evaluation.stat().st_mtime - start)
