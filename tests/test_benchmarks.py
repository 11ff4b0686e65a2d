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
    config = write_config(tiny_config(tiny_data, tmp_path / "runs"), tmp_path / "tiny.toml")
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


def test_experiments_summary_gathers_variants_and_seeds(tmp_path):
    from benchmarks.common import machine_slug
    from benchmarks.experiments import label_of, summary

    assert label_of([]) == "method" and label_of([], 2) == "method-seed2" and label_of(["read-only", "wide"], 1) == "read-only+wide-seed1"

    def row(style, variant, seed, psnr):
        pairings = {"target:original": 31.0, "reference:original": 32.0, "reference:style": 30.0}
        return {"style": style, "variant": variant, "seed": seed, "transfer_psnr": psnr, "gain_db": psnr - 18.0,
                "kl_target_reference": 0.5, "psnr": pairings}  # fmt: skip

    prefix = f"{machine_slug()}-2026-01-02-experiments-digger"
    runs = {"": ("method", 0, 18.0), "-method-seed1": ("method-seed1", 1, 19.0), "-read-only": ("read-only", 0, 21.0)}
    for suffix, (variant, seed, psnr) in runs.items():
        table = {"variant": variant, "styles": [row("pattern", variant, seed, psnr)], "together": None}
        (tmp_path / f"{prefix}{suffix}.json").write_text(json.dumps(table))
    path, text = summary("digger", "2026-01-02", tmp_path)
    assert path == tmp_path / f"{prefix}-options.md" and path.read_text() == text
    assert "| pattern | read-only | 21.00 | +3.00 | +3.00 | 0.50 | 31.00 | 30.00 |" in text
    assert "| pattern | method-seed1 | 19.00 | +1.00 |" in text
    assert "| pattern | method | 0, 1 | 18.50 | 18.00 | 19.00 | +0.50 |" in text  # the seed spread: method only
    assert "| pattern | read-only | 0" not in text


def test_results_keep_only_the_pictures_the_readme_shows():
    """benchmarks/results/ holds numbers; its only pictures are the allow-list, each shown by benchmarks/README.md."""
    from benchmarks.common import KEPT_PICTURES, RESULTS

    assert sorted(p.name for p in RESULTS.glob("*.png")) == sorted(KEPT_PICTURES)
    readme = (REPO / "benchmarks" / "README.md").read_text()
    assert [name for name in KEPT_PICTURES if f"results/{name}" not in readme] == []
