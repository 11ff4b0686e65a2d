"""Shared fixtures: a tiny scene-kit analogy written once per session, and configs for it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastjoint.config import Config, DataConfig, RenderConfig, StyleData, TrainConfig, to_toml
from fastjoint.scenes import make_datasets

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """data/generated/tiny: target and reference, original and recolour, 24 px."""
    root = tmp_path_factory.mktemp("kit")
    return make_datasets(str(FIXTURES / "tiny.toml"), root=root)


def tiny_config(kit: Path, output_dir: Path, **sections) -> Config:
    """A config that trains the tiny analogy in seconds; `sections` replace config sections."""
    config = Config(
        name="tiny",
        output_dir=str(output_dir),
        device="cpu",
        data=DataConfig(
            kit="",
            target=str(kit / "target" / "original"),
            reference=str(kit / "reference" / "original"),
            styles={"recolour": StyleData(reference=str(kit / "reference" / "recolour"), target=str(kit / "target" / "recolour"))},
        ),
        render=RenderConfig(occ_resolution=32, step_size=0.04),
        train=TrainConfig(steps=300, rays_per_pairing=512, log_every=25, checkpoint_every=50, lr_warmup_steps=20),
    )
    for key, value in sections.items():
        if isinstance(value, dict):
            value = dataclasses.replace(getattr(config, key), **value)
        config = dataclasses.replace(config, **{key: value})
    return config


def write_config(config: Config, path: Path) -> Path:
    path.write_text(to_toml(config))
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`fastjoint ARGS` in a subprocess (python -m fastjoint, so the checkout's code runs)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "fastjoint", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


TINY_STEPS = 300


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
    """`fastjoint train` run once for the session on the tiny analogy, with eval and renders."""
    folder = tmp_path_factory.mktemp("trained")
    config = tiny_config(tiny_data, folder / "runs", train={"steps": TINY_STEPS})
    path = write_config(config, folder / "tiny.toml")
    result = run_cli("train", str(path), "--orbit", "4", cwd=folder)
    assert result.returncode == 0, result.stderr
    return config.run_dir, result, path
