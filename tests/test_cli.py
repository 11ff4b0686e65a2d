"""The `fastjoint` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import pytest

from conftest import FIXTURES, REPO, TINY_STEPS, run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow  # every test here starts the CLI (a fresh process importing torch)


def test_train_writes_a_complete_run(trained_run):
    run_dir, result, _ = trained_run
    assert f"finished at step {TINY_STEPS}" in result.stdout
    assert "target:recolour" in result.stderr  # the eval table
    assert (run_dir / "config.toml").is_file() and (run_dir / "eval.json").is_file()
    renders = run_dir / "renders" / "target_recolour"
    assert sorted(p.name for p in renders.glob("test_*.png")) == ["test_000.png", "test_001.png", "test_002.png"]
    assert len(list(renders.glob("orbit_*.png"))) == 4
    assert iio.imread(renders / "test_000.png").shape == (24, 24, 3)
    video = iio.imread(renders / "orbit.mp4")
    assert video.shape[0] == 4 and min(video.shape[1:3]) >= 256  # small frames are enlarged


def test_eval_and_render_verbs(trained_run):
    run_dir, _, _ = trained_run
    result = run_cli("eval", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "eval.json").read_text())["step"] == TINY_STEPS
    result = run_cli("render", str(run_dir), "--pairing", "reference:recolour", "--split", "val", "--video")
    assert result.returncode == 0, result.stderr
    folder = run_dir / "renders" / "reference_recolour"
    assert {p.name for p in folder.iterdir()} == {"val_000.png", "val_001.png", "val.mp4"}
    assert iio.imread(folder / "val.mp4").shape[0] == 2


def test_help_lists_every_config_key():
    result = run_cli("train", "--help", cwd=REPO)
    assert result.returncode == 0
    for option in ("--train.steps", "--model.grid-levels", "--render.step-size", "--backend.march", "--resume", "--max-seconds"):
        assert option in result.stdout, option


def test_scenes_list_and_make(tmp_path):
    result = run_cli("scenes", "list", cwd=REPO)
    assert result.returncode == 0 and "demo:" in result.stdout
    result = run_cli("scenes", "make", str(FIXTURES / "tiny.toml"), "--size", "12", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tiny-12px" / "reference" / "recolour" / "transforms_test.json").is_file()


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train", "--train.stepz", "3"], ["Unrecognized options: --train.stepz", "(did you mean --train.steps?)"]),
        (["train", "--train.steps", "many"], ["--train.steps", "'many'"]),
        (["train", "--device", "gpu"], ["'gpu'", "--device", "'auto', 'cpu', 'cuda'"]),
        (["train", "--train.lr", "inf"], ["'train.lr' must be a number, got inf"]),
        (["train", "--data.styles.recolour.reference", ""], ["data.styles.recolour.reference: must name a dataset folder"]),
        (["train", "--name", ".."], ["name: must be a plain folder name"]),
        (["train", "--orbit", "-1"], ["--orbit: must not be negative"]),
        (["train", "--max-seconds", "0"], ["--max-seconds: must be positive"]),
        (["train", "missing.toml"], ["missing.toml: config file not found"]),
        (["train", "configs"], ["configs: is a folder, not a config file"]),
        (["render", "runs/nothing"], ["runs/nothing: run folder not found"]),
        (["render", "."], [".: not a fastjoint run (no config.toml)"]),
        (["eval"], ["Missing from fastjoint eval: RUN"]),
        (["scenes", "make", "nothing"], ["data/nothing.toml: scene-kit recipe not found"]),
        (["scenes"], ["Expected one of {list, make}"]),
        (["trian"], ["Unrecognized options: trian", "available subcommands: train, eval"]),
    ],
)
def test_user_mistakes(args, fragments, tmp_path):
    assert_one_line_error(run_cli(*args, cwd=REPO if args[0] != "render" else tmp_path), *fragments)


def test_bad_pairing(trained_run):
    run_dir, _, _ = trained_run
    assert_one_line_error(run_cli("render", str(run_dir), "--pairing", "target:blue"), "unknown pairing 'target:blue'")


def test_malformed_dataset_names_the_file(tiny_data, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_data / "target" / "original", broken)
    meta = json.loads((broken / "transforms_train.json").read_text())
    meta["frames"][4]["transform_matrix"][0][0] = float("nan")
    (broken / "transforms_train.json").write_text(json.dumps(meta))
    config = tiny_config(tiny_data, tmp_path / "runs", data={"target": str(broken)})
    result = run_cli("train", str(write_config(config, tmp_path / "c.toml")), cwd=tmp_path)
    assert_one_line_error(result, str(broken / "transforms_train.json"), "frames[4].transform_matrix contains NaN")
    assert not (tmp_path / "runs" / "tiny" / "checkpoints").exists()


def test_an_existing_run_is_never_overwritten(trained_run):
    run_dir, _, config_path = trained_run
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    before = checkpoint.read_bytes()
    assert_one_line_error(run_cli("train", str(config_path), cwd=config_path.parent), "already holds a run", "--resume")
    assert checkpoint.read_bytes() == before
    changed = run_cli("train", str(config_path), "--resume", "--model.hidden", "32", "--no-eval", "--no-render", cwd=config_path.parent)
    assert_one_line_error(changed, "model.hidden differs from the run being resumed")
    assert checkpoint.read_bytes() == before


def test_native_backends_that_cannot_build(tiny_data, tmp_path):
    """A remembered failed build: `fused` (or `native`) named is a one-line error; `auto` warns and falls back."""
    from cuda_ext import build
    from fastjoint.ops import native

    cache = tmp_path / "cache"
    failed = cache / "ext" / build.build_key(with_cuda=False) / native.FAILED
    failed.parent.mkdir(parents=True)
    failed.write_text("x.cpp:1:1: error: the compiler said no\n")
    config = write_config(tiny_config(tiny_data, tmp_path / "runs", train={"steps": 2}), tmp_path / "tiny.toml")
    env = {"FASTJOINT_CACHE": str(cache), "CUDA_VISIBLE_DEVICES": ""}

    named = run_cli("train", str(config), "--backend.composite", "fused", "--no-eval", "--no-render", cwd=tmp_path, env=env)
    assert named.returncode == 2, named.stderr
    lines = named.stderr.strip().splitlines()
    assert len(lines) == 1 and 'backend.composite = "fused" cannot run here' in lines[0], named.stderr
    assert "the compiler said no" in lines[0] and str(failed) in lines[0]
    named = run_cli("train", str(config), "--backend.grid", "native", "--no-eval", "--no-render", cwd=tmp_path, env=env)
    lines = named.stderr.strip().splitlines()
    assert named.returncode == 2 and len(lines) == 1 and 'backend.grid = "native" cannot run here' in lines[0], named.stderr

    auto = run_cli("train", str(config), "--name", "fallback", "--no-eval", "--no-render", cwd=tmp_path, env=env)
    assert auto.returncode == 0, auto.stderr
    assert "backend.composite: fused cannot load its native kernels" in auto.stdout + auto.stderr
    assert "backend.grid: native cannot load its native kernels" in auto.stdout + auto.stderr
    assert "using torch (slower)" in auto.stdout + auto.stderr

    # The reference, asked for, builds nothing: an empty cache stays empty.
    empty = tmp_path / "empty-cache"
    chosen = run_cli(
        "train",
        str(config),
        "--name",
        "chosen",
        "--backend.composite",
        "torch",
        "--backend.grid",
        "torch",
        "--no-eval",
        "--no-render",
        cwd=tmp_path,
        env={**env, "FASTJOINT_CACHE": str(empty)},
    )
    assert chosen.returncode == 0, chosen.stderr
    output = chosen.stdout + chosen.stderr
    assert not empty.exists() and "fused" not in output and "native kernels" not in output
