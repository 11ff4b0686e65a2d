"""`fastjoint sweep`: the grid of a sweep file, its summary, and sweeps run on a real local Ray cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_STEPS, cli_env, logged_steps, run_cli, started_cli, tiny_config, wait_for, write_config
from fastjoint.errors import UserError
from fastjoint.files import RunLock
from fastjoint.sweep import STATUS, read_status
from fastjoint.sweepfile import load_sweep
from fastjoint.sweepsummary import figures, markdown, summarise


def write_sweep(folder: Path, text: str, base: Path) -> Path:
    path = folder / "sweep.toml"
    path.write_text(f'name = "grid"\noutput_dir = "{folder / "sweeps"}"\nconfigs = ["{base}"]\n' + text)
    return path


@pytest.fixture
def base(tiny_data, tmp_path) -> Path:
    return write_config(tiny_config(tiny_data, tmp_path / "runs"), tmp_path / "tiny.toml")


# --- the grid ------------------------------------------------------------------------


def test_the_grid_crosses_configs_datasets_axes_and_seeds(tiny_data, base, tmp_path):
    other = write_config(tiny_config(tiny_data, tmp_path / "runs", model={"hidden": 32}), tmp_path / "narrow.toml")
    reference = tiny_data / "reference"
    path = tmp_path / "sweep.toml"
    path.write_text(
        f'name = "grid"\nconfigs = ["{base}", "{other}"]\nseeds = [3, 4]\nafter = ["eval", "analyze"]\n'
        '[axes]\n"train.lr" = [0.01, 0.002]\n"train.desired_shape_features" = [true, false]\n'
        f'[[datasets]]\nlabel = "pair"\ntarget = "{tiny_data / "target" / "original"}"\nreference = "{reference / "original"}"\n'
        f'styles = {{ recolour = {{ reference = "{reference / "recolour"}" }} }}\n'
    )
    sweep, points = load_sweep(path)
    assert len(points) == 2 * 1 * 2 * 2 * 2 and sweep.after == ("eval", "analyze")
    assert len({p.name for p in points}) == len(points)
    first = points[0]
    assert first.name == "tiny,pair,lr=0.01,desired_shape_features=true,seed3" and first.group == first.name.removesuffix(",seed3")
    assert first.values == {
        "config": str(base),
        "datasets": "pair",
        "train.lr": 0.01,
        "train.desired_shape_features": True,
        "train.seed": 3,
    }
    last = points[-1]
    assert last.name == "narrow,pair,lr=0.002,desired_shape_features=false,seed4"
    config = last.config
    assert (config.train.lr, config.train.desired_shape_features, config.train.seed, config.model.hidden) == (0.002, False, 4, 32)
    assert config.output_dir == "sweeps/grid" and config.name == last.name
    assert config.data.styles["recolour"].target == ""  # the datasets table replaced [data] whole
    assert config.train.steps == tiny_config(tiny_data, tmp_path).train.steps  # the rest is the base config's


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[axes]\n"train.lrr" = [0.01]\n', "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
        ('[axes]\n"train.lr" = [0.01, "fast"]\n', 'axes (train.lr = "fast") with '),
        ('[axes]\n"train.lr" = [0.01, -1.0]\n', "train.lr: must be positive"),
        ('[axes]\n"train" = [1]\n', "'train' is a section, not a key"),
        ('[axes]\n"train.seed" = [1, 2]\n', "set by the sweep itself"),
        ('[axes]\n"train.lr" = []\n', "must be a non-empty list of values"),
        ('[axes]\n"train.lr" = [0.01, 0.01]\n', "lists a value twice"),
        ("[axes.train]\nlr = [0.01]\n", "write the key dotted and quoted"),
        ("seeds = [1, 1]\n", "'seeds' needs at least one seed, each once"),
        ('after = ["eval", "paint"]\n', "'after' must be"),
        ('[[datasets]]\nlabel = "a/b"\ntarget = "t"\nreference = "r"\n', "'datasets[0].label' must be a plain name"),
        ('[[datasets]]\nlabel = "a"\ntarget = "t"\n', "missing key 'datasets[0].reference'"),
        ("colour = 1\n", "unknown key 'colour'"),
    ],
)
def test_a_mistake_in_a_sweep_file_is_one_line_naming_the_key(base, tmp_path, text, message):
    path = write_sweep(tmp_path, text, base)
    with pytest.raises(UserError) as refused:
        load_sweep(path)
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"{path}: ") and message in line


def test_a_missing_base_config_is_named(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('name = "grid"\nconfigs = ["nowhere.toml"]\n')
    with pytest.raises(UserError, match=r"'configs\[0\]': nowhere.toml: config file not found"):
        load_sweep(path)


# --- the summary ---------------------------------------------------------------------


def test_the_summary_is_mean_lowest_and_highest_over_the_finished_seeds(base, tmp_path):
    path = write_sweep(tmp_path, 'seeds = [0, 1, 2]\n[axes]\n"train.lr" = [0.01, 0.005]\n', base)
    sweep, points = load_sweep(path)
    scores = {0: (30.0, 10.0), 1: (32.0, 12.5), 2: (31.0, 9.0)}
    status = {}
    for point in points:
        seed = point.config.train.seed
        run = sweep.folder / point.name
        run.mkdir(parents=True)
        psnr, gain = scores[seed]
        eval_json = {
            "pairings": {"target:original": {"psnr": psnr, "ssim": 0.9, "views": 2}},
            "transfers": {"target:recolour": {"psnr": psnr - 1, "ssim": 0.8, "views": 2, "baseline_psnr": 20.0, "gain_db": gain}},
        }
        (run / "eval.json").write_text(json.dumps(eval_json))
        status[point.name] = "failed" if (point.group == "lr=0.005" and seed == 2) else "done"
    assert figures(eval_json)["target:recolour gain_db"] == 9.0
    summary = summarise(sweep.folder, points, status)
    assert (summary["runs"], summary["done"], summary["failed"]) == (6, 5, 1)
    rows = {row["group"]: row for row in summary["groups"]}
    assert rows["lr=0.01"]["seeds"] == [0, 1, 2] and rows["lr=0.005"]["seeds"] == [0, 1]  # a failed seed is left out
    assert rows["lr=0.01"]["figures"]["target:original psnr"] == {"mean": 31.0, "low": 30.0, "high": 32.0, "n": 3}
    assert rows["lr=0.005"]["figures"]["target:recolour gain_db"] == {"mean": 11.25, "low": 10.0, "high": 12.5, "n": 2}
    assert rows["lr=0.01"]["values"] == {"config": str(base), "train.lr": 0.01}
    text = markdown(summary)
    assert "| lr=0.01 | 0, 1, 2 | 31.00 (30.00 to 32.00) | 30.00 (29.00 to 31.00) |" in text
    assert "Failed: lr=0.005,seed2" in text


# --- on Ray --------------------------------------------------------------------------


def _ray_sweep(tiny_data, tmp_path) -> tuple[Path, Path]:
    config = tiny_config(tiny_data, tmp_path / "runs", train={"steps": TINY_STEPS, "checkpoint_every": 50, "log_every": 25})
    base = write_config(config, tmp_path / "tiny.toml")
    return write_sweep(tmp_path, 'seeds = [0, 1]\n[axes]\n"train.lr" = [0.01, 0.005]\n', base), tmp_path / "sweeps" / "grid"


def _runs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in ("points", "logs")) if folder.is_dir() else []


def _all_steps(folder: Path) -> list[list[int]]:
    return [logged_steps(run) for run in _runs(folder)]


def _training_pid(run: Path) -> int | None:
    """The PID of the `fastjoint train` writing a run (its lock), if one is."""
    try:
        return int((run / RunLock.NAME).read_text().strip())
    except (OSError, ValueError):
        return None


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _training(folder: Path, beyond: dict[str, int] | None = None) -> Path | None:
    """A run being trained now, past step 50 (or 25 steps past `beyond[run]`) and not at its end."""
    for run in _runs(folder):
        steps = logged_steps(run)
        start = (beyond or {}).get(run.name, 25)
        pid = _training_pid(run)
        if pid and Path(f"/proc/{pid}").exists() and steps and start + 25 <= steps[-1] < TINY_STEPS:
            return run
    return None


def _checkpoint_step(run: Path) -> int:
    import torch

    path = run / "checkpoints" / "latest.pt"
    return int(torch.load(path, weights_only=True)["step"]) if path.is_file() else 0


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the Ray worker through /proc")
def test_a_sweep_on_ray_survives_ctrl_c_and_a_killed_worker_and_retrains_nothing(tiny_data, tmp_path):
    pytest.importorskip("ray")
    path, folder = _ray_sweep(tiny_data, tmp_path)
    progress = lambda: _all_steps(folder)  # noqa: E731

    # Ctrl-C while runs train: they checkpoint, and the sweep says how to continue.
    log = tmp_path / "first.log"
    with started_cli("sweep", str(path), cwd=tmp_path, log=log) as process:
        wait_for(process, log, lambda: _training(folder) is not None, "a run trained past step 50", progress)
        busy = _training(folder)
        seen = logged_steps(busy)[-1]
        process.send_signal(signal.SIGINT)
        process.wait()
    lines = log.read_text().strip().splitlines()
    assert process.returncode == 130, log.read_text()[-3000:]
    assert lines[-1].startswith("interrupted (") and lines[-1].endswith("runs done); run the same command to continue")
    assert not any(_training_pid(run) and Path(f"/proc/{_training_pid(run)}").exists() for run in _runs(folder))
    finished = {run.name: (run / "checkpoints" / "latest.pt").stat().st_mtime_ns for run in _runs(folder) if read_status(run)}
    stopped = [run for run in _runs(folder) if not read_status(run) and (run / "checkpoints" / "latest.pt").is_file()]
    assert busy in stopped and _checkpoint_step(busy) >= seen  # it checkpointed where Ctrl-C found it

    # Started again, with a worker killed mid-training: Ray runs its task again, which resumes the run.
    log = tmp_path / "second.log"
    at_start = {run.name: _checkpoint_step(run) for run in _runs(folder)}
    with started_cli("sweep", str(path), cwd=tmp_path, log=log) as process:
        wait_for(process, log, lambda: _training(folder, at_start) is not None, "a resumed run trained 25 steps", progress)
        victim = _training(folder, at_start)
        training = _training_pid(victim)
        assert "fastjoint" in Path(f"/proc/{training}/cmdline").read_text()
        victim_log = folder / "logs" / f"{victim.name}.log"
        # The training is out of its worker's process group, which Ray kills when the worker dies.
        assert os.getpgid(training) != os.getpgid(_parent(training))
        before = len(victim_log.read_text().splitlines())
        reached = logged_steps(victim)[-1]
        os.kill(_parent(training), signal.SIGKILL)
        wait_for(process, log, lambda: process.poll() is not None, "the sweep ended", progress)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert "4 of 4 runs done, 0 failed" in log.read_text()
    after_kill = victim_log.read_text().splitlines()[before:]
    # The killed worker's training was told (SIGTERM), not killed outright: it checkpointed where it was.
    told = re.findall(r"^terminated \(SIGTERM\) at step (\d+); checkpoint written", "\n".join(after_kill), re.MULTILINE)
    assert len(told) == 1 and int(told[0]) >= reached, "\n".join(after_kill)[-3000:]
    commands = [line for line in after_kill if line.startswith("$ fastjoint train")]
    assert len(commands) == 1 and commands[0].endswith("--resume")  # the task run again resumed the run
    assert read_status(victim) == {"status": "done", "attempts": 1, "resumed": True}
    for run in _runs(folder):
        assert read_status(run)["status"] == "done" and logged_steps(run)[-1] == TINY_STEPS
        if run.name in finished:
            assert (run / "checkpoints" / "latest.pt").stat().st_mtime_ns == finished[run.name]  # not trained again
    assert all(read_status(run)["resumed"] for run in stopped)
    summary = json.loads((folder / "summary.json").read_text())
    assert [row["group"] for row in summary["groups"]] == ["lr=0.01", "lr=0.005"]
    assert all(row["seeds"] == [0, 1] and row["figures"]["target:recolour psnr"]["n"] == 2 for row in summary["groups"])
    assert (folder / "summary.md").read_text().startswith("# Sweep summary: 4 of 4 runs done, 0 failed")

    # Once more: nothing to do, nothing trained.
    marks = {run.name: (run / "checkpoints" / "latest.pt").stat().st_mtime_ns for run in _runs(folder)}
    done = run_cli("sweep", str(path), cwd=tmp_path)
    assert done.returncode == 0 and "4 of 4 runs done, 0 failed" in done.stdout, done.stderr[-3000:]
    assert {run.name: (run / "checkpoints" / "latest.pt").stat().st_mtime_ns for run in _runs(folder)} == marks


@pytest.mark.slow
def test_sweep_mistakes_are_one_line_and_start_nothing(tiny_data, tmp_path):
    path, folder = _ray_sweep(tiny_data, tmp_path)
    (tmp_path / "bad").mkdir()
    bad = write_sweep(tmp_path / "bad", '[axes]\n"train.lrr" = [0.01]\n', tmp_path / "tiny.toml")
    result = run_cli("sweep", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {bad}: axes (train.lrr = 0.01) with {tmp_path / 'tiny.toml'}: unknown key 'train.lrr' (did you mean 'train.lr'?)"
    ]
    result = run_cli("sweep", str(path), "--cpus-per-run", "0", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == ["error: --cpus-per-run: must be positive"]
    assert not folder.exists()

    # Two sweeps into one folder: the second is refused, as two trainings into one run are.
    with RunLock(folder, writer="fastjoint sweep", what="sweep"):
        result = run_cli("sweep", str(path), cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"error: {folder}: another fastjoint sweep (PID {os.getpid()}) is writing this sweep" in result.stderr
    assert not (folder / "points").exists()

    # Without Ray: one line saying how to install it.
    no_ray = tmp_path / "no_ray"
    (no_ray / "ray").mkdir(parents=True)
    (no_ray / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**cli_env(), "PYTHONPATH": f"{no_ray}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "fastjoint", "sweep", str(path)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ['error: fastjoint sweep needs Ray: pip install -e ".[sweep]" (or pip install "ray>=2.9")']
    assert not (folder / "points").exists() and not any((run / STATUS).exists() for run in _runs(folder))
