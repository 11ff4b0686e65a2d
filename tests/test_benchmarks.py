"""The benchmark suite runs end to end on a tiny budget and writes well-formed JSON.

Speed is never asserted here: this only checks that the measuring works.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import imageio.v3 as iio
import pytest

from conftest import REPO, default_signals, tiny_config, write_config

pytestmark = pytest.mark.slow


def test_suite_quick_run_writes_results(tiny_data, tmp_path):
    # The hash grid's finest level at 64 (2 sub-cells per occupancy cell when baking, not 8): a few
    # training steps leave every cell occupied, and the fast renderer's bake of 8^3 sub-cells in each
    # took 75 to 135 s per throughput row on 2 cores, most of this test's time.
    config = tiny_config(tiny_data, tmp_path / "runs", model={"grid_max_resolution": 64})
    config = write_config(config, tmp_path / "tiny.toml")
    results = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--only",
            "throughput",
            "composite",
            "hashgrid",
            "time_to_quality",
            "--quick",
            "--config",
            str(config),
            "--results",
            str(results),
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=default_signals,
    )
    assert done.returncode == 0, done.stderr
    files = {p.name.split("-", 4)[-1] for p in results.iterdir() if p.is_file()}
    assert files == {"throughput.json", "composite-cpu.json", "hashgrid.json", "time_to_quality.json"}, files
    pictures = {p.name.split("-", 4)[-1] for p in (results / "pictures").iterdir()}  # pictures apart: git ignores them
    assert pictures == {"time_to_quality.png"}, pictures

    composite = json.loads(next(results.glob("*composite-cpu.json")).read_text())
    assert [row["implementation"] for row in composite["rows"]] == ["torch", "fused"]
    for row in composite["rows"]:
        assert row["max_abs_difference"] < 1e-4 and math.isfinite(row["speedup_vs_torch"]) and row["seconds"] > 0, row

    hashgrid = json.loads(next(results.glob("*hashgrid.json")).read_text())
    assert [row["implementation"] for row in hashgrid["rows"]] == ["torch", "native"]
    for row in hashgrid["rows"]:
        assert row["max_abs_difference"] < 1e-4 and math.isfinite(row["speedup"]) and row["seconds"] > 0, row
    assert set(hashgrid["speedup"]) == {"demo/1000/native"}

    throughput = json.loads(next(results.glob("*throughput.json")).read_text())
    assert throughput["benchmark"] == "throughput" and throughput["machine"]["cpu_cores"] >= 1
    encoders = [row["encoder"] for row in throughput["rows"]]
    assert encoders[-1] == "mlp" and "hashgrid" in encoders
    assert {row["composite"] for row in throughput["rows"]} >= {"fused", "torch"}
    for row in throughput["rows"]:
        for key in ("rays_per_second", "samples_per_second", "frames_per_second", "peak_rss_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert next(r for r in throughput["rows"] if r["encoder"] == "mlp")["samples_per_ray"] == 64
    for row in throughput["rows"]:  # the fast renderer on the same frames, for every uncompiled hash-grid row
        fast = row["encoder"] == "hashgrid" and not row["compile"]
        for key in ("render_rays_per_second", "fast_rays_per_second", "bake_seconds", "baked_mb"):
            if key == "render_rays_per_second" or fast:
                assert math.isfinite(row[key]) and row[key] > 0, (key, row)
            else:
                assert row[key] is None, (key, row)
    compiled = [r for r in throughput["rows"] if r["compile"]]  # the default backends, heads and decoders compiled
    assert len(compiled) == 1 and (compiled[0]["grid"], compiled[0]["composite"]) == ("native", "fused")

    quality = json.loads(next(results.glob("*time_to_quality.json")).read_text())
    assert set(quality["runs"]) == {"hashgrid", "mlp"}
    for run in quality["runs"].values():
        seconds = [point["seconds"] for point in run["curve"]]
        assert seconds[0] == 0.0 and seconds == sorted(seconds) and len(seconds) >= 2
        assert set(run["curve"][-1]["psnr"]) == {"target:original", "reference:original", "reference:recolour"}
    assert [row["pairing"] for row in quality["summary"]][-1] == "all trained"
    assert iio.imread(next(results.glob("pictures/*time_to_quality.png"))).shape[2] == 3


def test_restyle_benchmark_quick_run(tiny_data, tmp_path):
    """`python -m benchmarks --only restyle --quick`: trains a tiny base run, restyles a style it has, compares."""
    config = write_config(tiny_config(tiny_data, tmp_path / "runs"), tmp_path / "tiny.toml")
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "restyle", "--quick", "--config", str(config), "--results", str(results)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    (path,) = results.glob("*restyle.json")
    payload = json.loads(path.read_text())
    assert payload["style"] == "again" and len(payload["runs"]) == 1
    summary = payload["median"]
    assert summary["command_seconds"] > summary["fit_seconds"] > 0
    assert math.isfinite(summary["restyle_psnr"]) and math.isfinite(summary["joint_psnr"])
    assert summary["difference_db"] == summary["restyle_psnr"] - summary["joint_psnr"]


def test_the_kit_sweep_file_is_the_experiments_sweep(monkeypatch, tmp_path):
    """benchmarks/sweeps/kit.toml is the sweep `experiments --target digger robot --styles recolour relight --seeds 0 1 2` runs."""
    from benchmarks.experiments import WORK, config_of, sweep_name, sweep_toml
    from fastjoint.sweepfile import load_sweep

    monkeypatch.chdir(REPO)  # both name their configs from the checkout
    targets, styles = ["digger", "robot"], ["recolour", "relight"]
    kit, kit_points = load_sweep(REPO / "benchmarks" / "sweeps" / "kit.toml")
    written = tmp_path / "ours.toml"
    written.write_text(sweep_toml(sweep_name(targets, styles, []), WORK, [config_of(t, s) for t in targets for s in styles], [0, 1, 2], {}))
    ours, our_points = load_sweep(written)
    assert ours == kit and (REPO / kit.folder).resolve() == (WORK / kit.name).resolve()
    assert [p.name for p in our_points] == [p.name for p in kit_points] and len(kit_points) == 12
    assert kit.after == ("eval", "analyze") and kit.seeds == (0, 1, 2) and not kit.axes


def test_experiments_sweep_tables_come_from_the_summary(tiny_data, tmp_path):
    """The experiments' sweep on the tiny analogy, 2 seeds, with a variant: its table is summary.json's
    figures (and the runs' KL over the seeds); the same command again trains nothing."""
    import time

    from benchmarks.experiments import VARIANTS, draw_pictures, experiment, markdown

    config = tiny_config(tiny_data, tmp_path / "runs", train={"steps": 150, "checkpoint_every": 50, "log_every": 25})
    path = write_config(config, tmp_path / "tiny-recolour.toml")
    grid = {str(path): ("tiny", "recolour")}
    start = time.monotonic()
    done = experiment(grid, [0, 1], VARIANTS["read-only"], tmp_path / "work", "tiny")
    seconds = time.monotonic() - start
    assert done.exit_status == 0 and done.summary["done"] == 2, done.summary
    assert done.sweep_file == tmp_path / "work" / "tiny.toml" and '"train.desired_shape_features" = [false]' in done.sweep_file.read_text()
    assert done.folder == tmp_path / "work" / "tiny" and json.loads((done.folder / "summary.json").read_text()) == done.summary

    (group,) = done.summary["groups"]
    (row,) = done.rows
    figures = group["figures"]
    assert group["group"] == "desired_shape_features=false" and row["seeds"] == group["seeds"] == [0, 1]
    assert (row["target"], row["style"]) == ("tiny", "recolour")
    assert row["psnr"] == {
        "target:original": figures["target:original psnr"],
        "reference:original": figures["reference:original psnr"],
        "reference:style": figures["reference:recolour psnr"],
    }
    assert row["transfer_psnr"] == figures["target:recolour psnr"] and row["transfer_psnr"]["n"] == 2
    assert row["baseline_psnr"] == figures["target:recolour baseline_psnr"] and row["gain_db"] == figures["target:recolour gain_db"]
    runs = [done.folder / f"desired_shape_features=false,seed{seed}" for seed in (0, 1)]
    assert row["runs"] == [str(run) for run in runs]
    kl = [json.loads((run / "analysis.json").read_text())["kl"]["target||reference"] for run in runs]
    assert row["kl_target_reference"] == {"mean": math.fsum(kl) / 2, "low": min(kl), "high": max(kl), "n": 2}

    t = row["transfer_psnr"]
    text = markdown(done.rows, "read-only")
    assert f"| tiny | recolour | 0, 1 | {figures['target:original psnr']['mean']:.2f} (" in text
    assert f"{t['mean']:.2f} ({t['low']:.2f} to {t['high']:.2f})" in text and text.startswith("Variant: read-only.")

    results = tmp_path / "results"
    draw_pictures(row, str(path), [0, 1, 2], results, "2026-01-02", "read-only")
    assert row["contact_sheet"].endswith("-2026-01-02-experiments-tiny-read-only-recolour.png")
    assert iio.imread(results / "pictures" / row["contact_sheet"]).shape[2] == 3
    assert (results / "pictures" / row["features"]).is_file()

    # The same command again: every run is done, so nothing trains, and the table is the same.
    marks = {run: (run / "eval.json").stat().st_mtime_ns for run in runs}
    again = experiment(grid, [0, 1], VARIANTS["read-only"], tmp_path / "work", "tiny")
    assert again.exit_status == 0 and again.rows == [{k: v for k, v in row.items() if k not in ("contact_sheet", "features")}]
    assert {run: (run / "eval.json").stat().st_mtime_ns for run in runs} == marks
    print(f"the tiny sweep: {seconds:.0f} s")


def test_results_keep_only_the_pictures_the_readme_shows():
    """benchmarks/results/ holds numbers; its only pictures are the allow-list, each shown by benchmarks/README.md."""
    from benchmarks.common import KEPT_PICTURES, RESULTS

    assert sorted(p.name for p in RESULTS.glob("*.png")) == sorted(KEPT_PICTURES)
    readme = (REPO / "benchmarks" / "README.md").read_text()
    assert [name for name in KEPT_PICTURES if f"results/{name}" not in readme] == []
