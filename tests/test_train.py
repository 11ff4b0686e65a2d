"""Training end to end: quality on a tiny analogy, metrics, and kill-and-resume."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from conftest import REPO, TINY_STEPS, logged_steps, run_cli, started_cli, tiny_config, wait_for, write_config
from fastjoint.architecture import architecture
from fastjoint.config import Config, load_config

pytestmark = pytest.mark.slow


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_reaches_quality_and_transfers(trained_run):
    run_dir, _, _ = trained_run
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["step"] == TINY_STEPS
    for name in ("target:original", "reference:original", "reference:recolour"):
        assert result["pairings"][name]["psnr"] > 22.0, result["pairings"]
        assert result["pairings"][name]["ssim"] > 0.8
    assert set(result["transfers"]) == {"target:recolour"} and result["untested"] == []
    transfer = result["transfers"]["target:recolour"]
    assert transfer["psnr"] > transfer["baseline_psnr"] + 3.0, transfer
    assert transfer["gain_db"] == pytest.approx(transfer["psnr"] - transfer["baseline_psnr"])


def test_metrics_log_every_pairing_and_psnr_rises(trained_run):
    run_dir, _, _ = trained_run
    lines = read_metrics(run_dir)
    assert [line["step"] for line in lines] == list(range(25, TINY_STEPS + 1, 25))
    for name in ("target:original", "reference:original", "reference:recolour"):
        assert lines[-1][f"psnr/{name}"] > lines[0][f"psnr/{name}"] + 5.0
    assert all(line["samples_per_ray"] > 0 and line["lr"] > 0 for line in lines)
    assert all(b["wall_seconds"] > a["wall_seconds"] for a, b in zip(lines, lines[1:]))


def test_learning_rate_schedule():
    config = load_config(REPO / "configs" / "demo.toml")
    lr_factor = architecture(config).lr_factor
    steps = config.train.steps
    assert lr_factor(0, config) == pytest.approx(1 / config.train.lr_warmup_steps)
    assert lr_factor(config.train.lr_warmup_steps, config) == 1.0
    assert lr_factor(steps // 2, config) == pytest.approx(0.33)
    assert lr_factor(steps - 1, config) == pytest.approx(0.33**3)


def test_killed_run_resumes_to_the_same_model(trained_run, tmp_path):
    """SIGKILL mid-run, then --resume: the result equals the uninterrupted run's, bit for bit.

    The wait for step 125 is bounded by progress, not by a wall clock: a slow machine is
    waited for, a run that dies or stops progressing fails the test saying so.
    """
    reference_dir, _, config_path = trained_run
    config = Config(**{**vars_of(config_path), "output_dir": str(tmp_path / "runs")})
    path = write_config(config, tmp_path / "tiny.toml")
    args = ("train", str(path), "--no-eval", "--no-render")
    log = tmp_path / "first.log"
    with started_cli(*args, cwd=tmp_path, log=log) as process:
        steps = lambda: logged_steps(config.run_dir)  # noqa: E731
        wait_for(process, log, lambda: any(step >= 125 for step in steps()), "step 125 was logged", steps)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {log.read_text()[-2000:]}"
    killed_at = torch.load(config.run_dir / "checkpoints" / "latest.pt", weights_only=True)["step"]
    assert 100 <= killed_at < TINY_STEPS

    resumed = run_cli(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    final = torch.load(config.run_dir / "checkpoints" / "latest.pt", weights_only=True)
    reference = torch.load(reference_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert final["step"] == reference["step"] == TINY_STEPS
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key
    assert torch.equal(final["estimators"]["target.binaries"], reference["estimators"]["target.binaries"])
    # metrics.jsonl lost the lines after the checkpoint and rewrote them identically.
    ours, theirs = read_metrics(config.run_dir), read_metrics(reference_dir)
    assert [line["step"] for line in ours] == [line["step"] for line in theirs]
    assert [line["loss/target:original"] for line in ours] == [line["loss/target:original"] for line in theirs]


def vars_of(path):
    from fastjoint.config import load_config

    config = load_config(path)
    return {field: getattr(config, field) for field in config.__dataclass_fields__}


def test_ctrl_c_writes_a_checkpoint(tiny_data, tmp_path):
    """Ctrl-C (SIGINT) mid-run: one line, exit status 130, a checkpoint at the step reached."""
    config = tiny_config(tiny_data, tmp_path / "runs", train={"steps": 5000, "checkpoint_every": 5000})
    path = write_config(config, tmp_path / "tiny.toml")
    log = tmp_path / "train.log"
    with started_cli("train", str(path), "--no-eval", "--no-render", cwd=tmp_path, log=log) as process:
        steps = lambda: logged_steps(config.run_dir)  # noqa: E731
        wait_for(process, log, lambda: bool(steps()), "its first metrics line", steps)
        process.send_signal(signal.SIGINT)
        process.wait()
    output = log.read_text()
    assert process.returncode == 130, output
    assert "interrupted (Ctrl-C) at step" in output and "continue with --resume" in output
    step = torch.load(config.run_dir / "checkpoints" / "latest.pt", weights_only=True)["step"]
    assert 25 <= step < 5000
    assert f"at step {step};" in output


def test_mlp_baseline_trains_through_the_same_trainer(tiny_data, tmp_path):
    from fastjoint.evaluate import evaluate
    from fastjoint.train import Trainer

    config = tiny_config(
        tiny_data,
        tmp_path,
        model={"encoder": "mlp"},
        mlp={"width": 64, "samples_per_ray": 16},
        train={"steps": 6, "rays_per_pairing": 64, "log_every": 3},
    )
    summary = Trainer(config).run()
    assert summary.finished and summary.step == 6
    lines = read_metrics(config.run_dir)
    assert [line["samples_per_ray"] for line in lines] == [16.0, 16.0]  # uniform, no occupancy grid
    assert lines[0]["lr"] == pytest.approx(5e-4 * 0.1 ** (3 / 250_000))
    result = evaluate(config.run_dir)
    assert set(result.pairings) == {"target:original", "reference:original", "reference:recolour"}


def test_adaptive_batches_hold_the_target_samples_and_resume_with_their_size(tiny_data, tmp_path):
    from fastjoint.train import Trainer, adapted_rays

    assert adapted_rays(1024, 8192, 4096) == 512 and adapted_rays(100, 100, 4096) == 4096 and adapted_rays(1024, 10**9, 4096) == 64
    config = tiny_config(tiny_data, tmp_path, train={"steps": 60, "target_samples": 4096, "log_every": 20, "checkpoint_every": 30})
    with Trainer(config) as trainer:
        assert trainer.target_samples == 4096 and set(trainer.batch_rays.values()) == {512}
        for _ in range(30):
            stats = trainer.train_step()
        trainer.save()
        sizes = dict(trainer.batch_rays)
    # Each pairing's batch now holds about 4,096 samples (the last step's count was scaled to it).
    assert abs(stats.samples / 3 - 4096) < 0.35 * 4096, stats
    assert len(set(sizes.values())) > 1 or next(iter(sizes.values())) != 512  # the sizes moved
    with Trainer(config, resume=True) as resumed:
        assert resumed.batch_rays == sizes
    # Off (0, and "auto" on the CPU): the fixed train.rays_per_pairing, as before.
    fixed = tiny_config(tiny_data, tmp_path, name="fixed", train={"steps": 2, "target_samples": "auto"})
    with Trainer(fixed) as trainer:
        assert trainer.target_samples == 0
        assert trainer.train_step().rays == 3 * 512
        assert set(trainer.batch_rays.values()) == {512}
