"""Shared fixtures: a tiny scene-kit analogy written once per session, and configs for it."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from fastjoint.config import Config, DataConfig, RenderConfig, StyleData, TrainConfig, to_toml
from fastjoint.scenes import make_datasets

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the checkout's `benchmarks` package, whose pieces some tests reuse
    sys.path.insert(0, str(REPO))

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
TCNN = pytest.mark.skipif(importlib.util.find_spec("tinycudann") is None, reason="needs tinycudann")
TCNN_RUNS = importlib.util.find_spec("tinycudann") is not None and torch.cuda.is_available()
"""Whether tiny-cuda-nn can run here (tinycudann installed and CUDA present)."""


def fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")  # fresh inputs every run; the seed is in the report


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


def default_signals() -> None:
    """Runs in a test's child before it starts: Ctrl-C and SIGTERM as a user's shell gives them.

    A test runner started as a background job ignores SIGINT, and a child inherits ignored
    signals; without this, a test that sends SIGINT would wait for ever.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def cli_env(env: dict | None = None) -> dict:
    """The environment of a `fastjoint` subprocess: the checkout's code, one thread, wide lines."""
    return dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), **(env or {}))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`fastjoint ARGS` in a subprocess (python -m fastjoint, so the checkout's code runs).

    The child gets default signal handling; on a timeout (or any error here) it is killed.
    """
    return subprocess.run(
        [sys.executable, "-m", "fastjoint", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=default_signals,
    )


@contextlib.contextmanager
def started_cli(*args: str, cwd: Path, log: Path, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """`fastjoint ARGS` started in the background (stdout and stderr to `log`); killed on leaving if still alive."""
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastjoint", *args],
            cwd=cwd,
            env=cli_env(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=default_signals,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def logged_steps(run_dir: Path) -> list[int]:
    """The steps of metrics.jsonl's whole lines so far."""
    path = run_dir / "metrics.jsonl"
    steps = []
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                steps.append(json.loads(line)["step"])
    return steps


# How long a training may go without writing anything new before a test gives up on it. Not a
# deadline for the whole wait: a slow machine that keeps progressing is waited for.
STALL_SECONDS = 600.0


def wait_for(process: subprocess.Popen, log: Path, condition: Callable[[], bool], what: str, progress: Callable[[], object]) -> None:
    """Waits until `condition()` holds while the process lives and keeps making `progress()`.

    Fails, saying so plainly, if the process ends first, or if `progress()` (e.g. the steps
    logged so far) stays the same for STALL_SECONDS: a machine too busy is not a product bug,
    and the message says which it was.
    """
    last, since = progress(), time.monotonic()
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the training ended (exit status {process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > STALL_SECONDS:
            raise AssertionError(
                f"the training made no progress for {STALL_SECONDS:.0f} s (last seen: {last!r}) before {what}: "
                "it hangs, or the machine is too busy to run this test"
            )
        time.sleep(0.05)


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


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A copy of the session's trained run, so that what a test adds (styles, renders) stays in that test."""
    run_dir, _, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy
