"""The bad-input corpus: every mistake and fault a user can meet, run as a user runs it.

Each case runs `fastjoint` in a subprocess and asserts the promise of DESIGN.md's Errors:
exit status 2, a single `error:` line naming the file or key, and nothing on disk lost or
changed (every file under the case's folder, and the run it touches, hashed before and
after). Most cases fail before any training starts; those that need a trained run share
conftest's `trained_run`; the few that train (faults: a second writer, SIGTERM, a full or
read-only disk, a diverging loss, a broken checkpoint) train a tiny model for a few steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import logged_steps, run_cli, started_cli, tiny_config, wait_for, write_config
from fastjoint.config import to_toml

# A model small enough that a checkpoint is half a megabyte and a step takes milliseconds.
SMALL_MODEL = {"grid_levels": 2, "grid_log2_table_size": 10, "hidden": 16}
SMALL_TRAIN = {"rays_per_pairing": 64, "lr_warmup_steps": 0}


# --- what every case asserts -----------------------------------------------------------


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under `folders` (links followed), by path, as a hash of its content; folders as 'dir'."""
    state = {}
    for folder in folders:
        if not folder.exists():
            continue
        for path in sorted(folder.rglob("*")):
            key = str(path)
            state[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2 and a single `error:` line on stderr holding every fragment; returns the line."""
    assert result.returncode == 2, f"exit status {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# --- the workspace of a case -----------------------------------------------------------


@dataclass
class Workspace:
    """A case's folder: its config, copies of datasets it breaks, and where its runs would go."""

    root: Path
    kit: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def config(self, name: str = "c.toml", **sections) -> str:
        """Writes a tiny config (its runs under root/runs) with `sections` replaced; returns its path."""
        return str(write_config(tiny_config(self.kit, self.runs, **sections), self.root / name))

    def dataset(self, scene: str = "target", style: str = "original") -> Path:
        """A copy of one of the kit's datasets in this workspace, to break."""
        copy = self.root / "data" / f"{scene}_{style}"
        if not copy.exists():
            shutil.copytree(self.kit / scene / style, copy)
        return copy

    def broken(self, edit: Callable[[Path], None], scene: str = "target", style: str = "original") -> str:
        """A config whose dataset of `scene`:`style` is a copy broken by `edit(folder)`."""
        folder = self.dataset(scene, style)
        edit(folder)
        if style == "original":
            return self.config(data={scene: str(folder)})
        styles = {"recolour": _style(self.kit, **{scene: str(folder)})}
        return self.config(data={"styles": styles})

    def frames(self, folder: Path, edit: Callable[[list], None], split: str = "train") -> None:
        """Edits the frames list of `folder`'s transforms_<split>.json."""
        path = folder / f"transforms_{split}.json"
        meta = json.loads(path.read_text())
        edit(meta["frames"])
        path.write_text(json.dumps(meta))


def _style(kit: Path, **paths: str):
    from fastjoint.config import StyleData

    base = {"reference": str(kit / "reference" / "recolour"), "target": str(kit / "target" / "recolour")}
    return StyleData(**{**base, **paths})


def _set(frames: list, index: int, key: str, value) -> None:
    frames[index][key] = value


def _transforms(folder: Path, split: str = "train") -> Path:
    return folder / f"transforms_{split}.json"


def _image(folder: Path, index: int = 3) -> Path:
    return folder / "train" / f"r_{index}.png"


# --- the corpus: cases that fail before training starts ---------------------------------
# Each entry: id -> (setup(workspace) -> command-line arguments, fragments of the error line).
# "{tmp}" in a fragment stands for the case's folder.

CASES: dict[str, tuple[Callable[[Workspace], list[str]], tuple[str, ...]]] = {}


def case(*fragments: str):
    def register(setup: Callable[[Workspace], list[str]]):
        CASES[setup.__name__] = (setup, fragments)
        return setup

    return register


# Command-line values: the same checks as the config file's.


@case("'train.lr' must be a number, got inf")
def lr_inf(w):
    return ["train", w.config(), "--train.lr", "inf"]


@case("train.lr: must be positive")
def lr_nan(w):
    return ["train", w.config(), "--train.lr", "nan"]


@case("train.lr: must be positive")
def lr_negative(w):
    return ["train", w.config(), "--train.lr", "-0.01"]


@case("train.steps: must be at least 1")
def steps_zero(w):
    return ["train", w.config(), "--train.steps", "0"]


@case("--train.steps", "'many'")
def steps_not_a_number(w):
    return ["train", w.config(), "--train.steps", "many"]


@case("train.rays_per_pairing: must be at least 1")
def rays_zero(w):
    return ["train", w.config(), "--train.rays-per-pairing", "0"]


@case("--orbit: must not be negative")
def train_orbit_negative(w):
    return ["train", w.config(), "--orbit", "-1"]


@case("--max-seconds: must be positive")
def max_seconds_zero(w):
    return ["train", w.config(), "--max-seconds", "0"]


@case("--max-seconds: must be positive")
def max_seconds_negative(w):
    return ["train", w.config(), "--max-seconds", "-5"]


@case("name: must be a plain folder name", "'..'")
def name_dot_dot(w):
    return ["train", w.config(), "--name", ".."]


@case("name: must be a plain folder name", "'a/b'")
def name_with_separator(w):
    return ["train", w.config(), "--name", "a/b"]


@case("name: must be a plain folder name")
def name_empty(w):
    return ["train", w.config(), "--name", ""]


@case("render.occ_resolution: must be at least 2")
def occ_resolution_one(w):
    return ["train", w.config(), "--render.occ-resolution", "1"]


@case("data.aabb: needs min < max on every axis")
def aabb_inverted(w):
    return ["train", w.config(), "--data.aabb", "1", "1", "1", "0", "0", "0"]


@case("model.sh_degree: must be between 1 and 4")
def sh_degree_too_high(w):
    return ["train", w.config(), "--model.sh-degree", "9"]


@case("render.background: needs values in [0, 1]")
def background_out_of_range(w):
    return ["train", w.config(), "--render.background", "2", "0", "0"]


@case("data.downscale: must be at least 1")
def downscale_zero(w):
    return ["train", w.config(), "--data.downscale", "0"]


@case("mlp.near: needs 0 < mlp.near < mlp.far")
def mlp_near_beyond_far(w):
    return ["train", w.config(), "--mlp.near", "7"]


@case("'gpu'", "--device", "cuda")
def device_unknown(w):
    return ["train", w.config(), "--device", "gpu"]


@case("--train.stepz", "did you mean --train.steps?")
def option_misspelt(w):
    return ["train", w.config(), "--train.stepz", "3"]


# Config files.


@case("{tmp}/configs: is a folder, not a config file")
def config_is_a_folder(w):
    (w.root / "configs").mkdir()
    return ["train", str(w.root / "configs")]


@case("{tmp}/missing.toml: config file not found")
def config_missing(w):
    return ["train", str(w.root / "missing.toml")]


@case("{tmp}/c.toml: not valid TOML")
def config_not_toml(w):
    (w.root / "c.toml").write_text("[train\nsteps = 3\n")
    return ["train", str(w.root / "c.toml")]


@case("{tmp}/c.toml: not a text file")
def config_binary(w):
    (w.root / "c.toml").write_bytes(b"\xff\xfe\x00\x81binary")
    return ["train", str(w.root / "c.toml")]


@case("{tmp}/c.toml: unknown key 'train.stepz'", "did you mean 'train.steps'")
def config_unknown_key(w):
    path = Path(w.config())
    text = path.read_text()
    section = text.index("[train]")
    path.write_text(text[:section] + text[section:].replace("steps = 300", "stepz = 300", 1))
    return ["train", str(path)]


@case("{tmp}/c.toml: 'train.steps' must be an integer, got 'many'")
def config_wrong_type(w):
    path = Path(w.config())
    text = path.read_text()
    section = text.index("[train]")
    path.write_text(text[:section] + text[section:].replace("steps = 300", 'steps = "many"', 1))
    return ["train", str(path)]


@case("{tmp}/c.toml: missing [data] table 'data'")
def config_without_data(w):
    (w.root / "c.toml").write_text('name = "tiny"\n')
    return ["train", str(w.root / "c.toml")]


@case("{tmp}/c.toml: 'data.target_original'", "[data.styles.<name>]")
def config_old_data_keys(w):
    (w.root / "c.toml").write_text('[data]\ntarget_original = "x"\n')
    return ["train", str(w.root / "c.toml")]


# Datasets.


@case("data.target: dataset folder not found: {tmp}/nowhere")
def dataset_folder_missing(w):
    return ["train", w.config(data={"target": str(w.root / "nowhere")})]


@case("{tmp}/data/target_original/transforms_train.json: not found")
def transforms_missing(w):
    return ["train", w.broken(lambda folder: _transforms(folder).unlink())]


@case("{tmp}/data/target_original/transforms_train.json: not valid JSON (line 1")
def transforms_not_json(w):
    return ["train", w.broken(lambda folder: _transforms(folder).write_text("{frames: ["))]


@case("{tmp}/data/target_original/transforms_train.json: must hold a JSON object")
def transforms_a_list(w):
    return ["train", w.broken(lambda folder: _transforms(folder).write_text("[1, 2]"))]


@case("{tmp}/data/target_original/transforms_train.json: 'camera_angle_x' must be a number in (0, pi), got 4")
def camera_angle_out_of_range(w):
    def edit(folder):
        meta = json.loads(_transforms(folder).read_text())
        _transforms(folder).write_text(json.dumps({**meta, "camera_angle_x": 4}))

    return ["train", w.broken(edit)]


@case("{tmp}/data/target_original/transforms_train.json: 'frames' must be a non-empty list")
def frames_empty(w):
    return ["train", w.broken(lambda folder: w.frames(folder, lambda frames: frames.clear()))]


@case("transforms_train.json: frames[2] must be an object")
def frame_not_an_object(w):
    return ["train", w.broken(lambda folder: w.frames(folder, lambda frames: frames.__setitem__(2, "r_2")))]


@case("transforms_train.json: frames[4].transform_matrix contains NaN or infinity")
def pose_nan(w):
    def edit(folder):
        path = _transforms(folder)
        meta = json.loads(path.read_text())
        meta["frames"][4]["transform_matrix"][0][0] = float("nan")
        path.write_text(json.dumps(meta))  # json writes NaN, as Python's json reads it

    return ["train", w.broken(edit)]


@case("transforms_train.json: frames[5].transform_matrix has a degenerate rotation")
def pose_zero_rotation(w):
    def zero(frames):
        matrix = frames[5]["transform_matrix"]
        for row in matrix[:3]:
            row[:3] = [0.0, 0.0, 0.0]

    return ["train", w.broken(lambda folder: w.frames(folder, zero))]


@case("transforms_train.json: frames[6].transform_matrix has a degenerate rotation")
def pose_flat_rotation(w):
    def flatten(frames):  # two equal columns: rank 2, the rays of one axis collapse
        for row in frames[6]["transform_matrix"][:3]:
            row[1] = row[0]

    return ["train", w.broken(lambda folder: w.frames(folder, flatten))]


@case("transforms_train.json: frames[1].transform_matrix must be a 4x4 matrix of numbers")
def pose_three_rows(w):
    return ["train", w.broken(lambda folder: w.frames(folder, lambda f: f[1]["transform_matrix"].pop()))]


@case("transforms_train.json: frames[0] has no 'transform_matrix'")
def pose_missing(w):
    return ["train", w.broken(lambda folder: w.frames(folder, lambda f: f[0].pop("transform_matrix")))]


@case("transforms_train.json: frames[7] has no 'file_path'")
def file_path_missing(w):
    return ["train", w.broken(lambda folder: w.frames(folder, lambda f: f[7].pop("file_path")))]


@case("{tmp}/data/target_original/train/r_3.png: image not found")
def image_missing(w):
    return ["train", w.broken(lambda folder: _image(folder).unlink())]


@case("{tmp}/data/target_original/train/r_3.png: empty file (0 bytes), not an image")
def image_zero_bytes(w):
    return ["train", w.broken(lambda folder: _image(folder).write_bytes(b""))]


@case("{tmp}/data/target_original/train/r_3.png: cannot read image")
def image_not_an_image(w):
    return ["train", w.broken(lambda folder: _image(folder).write_text("not a picture\n"))]


@case("{tmp}/data/target_original/train/r_3.png: cannot read image")
def image_truncated(w):
    return ["train", w.broken(lambda folder: _image(folder).write_bytes(_image(folder).read_bytes()[:60]))]


@case("{tmp}/data/target_original/train/r_3.png: expected an RGB or RGBA image, got shape (24, 24, 2)")
def image_two_channels(w):
    return ["train", w.broken(lambda folder: Image.new("LA", (24, 24)).save(_image(folder)))]


@case("{tmp}/data/target_original/train/r_3.png: image is 12x12 but r_0.png is 24x24")
def image_of_another_size(w):
    def shrink(folder):
        Image.open(_image(folder)).resize((12, 12)).save(_image(folder))

    return ["train", w.broken(shrink)]


@case("data.downscale: 5 does not divide the 24x24 images")
def downscale_not_dividing(w):
    return ["train", w.config(data={"downscale": 5})]


@case("{tmp}/data/reference_recolour/transforms_test.json: not found", "data.styles.recolour.reference needs a test split")
def eval_split_of_a_trained_pairing_missing(w):
    return ["train", w.broken(lambda folder: _transforms(folder, "test").unlink(), "reference", "recolour")]


@case("{tmp}/data/target_recolour/transforms_test.json: not found", "data.styles.recolour.target needs a test split")
def eval_split_of_a_ground_truth_missing(w):
    return ["train", w.broken(lambda folder: _transforms(folder, "test").unlink(), "target", "recolour")]


@case("data.styles.recolour.target: dataset folder not found: {tmp}/no-truth")
def ground_truth_folder_missing(w):
    return ["train", w.config(data={"styles": {"recolour": _style(w.kit, target=str(w.root / "no-truth"))}})]


# Runs that are not (whole) fastjoint runs: folders made here, no training.


def _fake_run(w: Workspace, latest: bytes | None = None, previous: bytes | None = None, config: bool = True) -> str:
    """A run folder with a config.toml and the given checkpoint files; returns its path."""
    run = w.runs / "tiny"
    (run / "checkpoints").mkdir(parents=True)
    if config:
        (run / "config.toml").write_text(to_toml(tiny_config(w.kit, w.runs)))
    for name, content in (("latest.pt", latest), ("previous.pt", previous)):
        if content is not None:
            (run / "checkpoints" / name).write_bytes(content)
    return str(run)


def _foreign_checkpoint() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"weights": torch.ones(3)}, buffer)
    return buffer.getvalue()


@case("{tmp}/runs/tiny: not a fastjoint run (no config.toml)")
def eval_a_folder_that_is_not_a_run(w):
    return ["eval", _fake_run(w, config=False)]


@case("{tmp}/runs/elsewhere: run folder not found")
def eval_a_missing_folder(w):
    return ["eval", str(w.runs / "elsewhere")]


@case("{tmp}/runs/tiny/checkpoints/latest.pt: no checkpoint")
def analyze_a_run_without_checkpoint(w):
    return ["analyze", _fake_run(w)]


@case("{tmp}/runs/tiny/checkpoints/latest.pt: not a fastjoint checkpoint")
def eval_a_foreign_checkpoint(w):
    return ["eval", _fake_run(w, latest=_foreign_checkpoint())]


@case("{tmp}/runs/tiny/checkpoints/latest.pt: cannot read checkpoint")
def render_a_truncated_checkpoint(w):
    return ["render", _fake_run(w, latest=_foreign_checkpoint()[:100])]


@case("checkpoints/latest.pt: cannot read checkpoint", "the fallback", "checkpoints/previous.pt: not a fastjoint checkpoint")
def resume_with_both_checkpoints_broken(w):
    _fake_run(w, latest=b"\x00" * 64, previous=_foreign_checkpoint())
    return ["train", w.config(), "--resume"]


@case("checkpoints/latest.pt: not a fastjoint checkpoint")
def resume_a_foreign_checkpoint(w):
    _fake_run(w, latest=_foreign_checkpoint())
    return ["train", w.config(), "--resume"]


@case("{tmp}/runs/tiny/config.toml: not valid TOML")
def eval_a_run_with_a_broken_config(w):
    run = Path(_fake_run(w, latest=_foreign_checkpoint()))
    (run / "config.toml").write_text("name = \n")
    return ["eval", str(run)]


@case("checkpoints/latest.pt: no checkpoint to resume")
def resume_a_run_that_never_started(w):
    return ["train", w.config(), "--resume"]


@pytest.mark.slow  # starts the CLI (a fresh process importing torch, for each case)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tiny_data, tmp_path):
    """One mistake, one line naming it, exit status 2, and the case's folder unchanged."""
    setup, fragments = CASES[name]
    workspace = Workspace(tmp_path, tiny_data)
    args = setup(workspace)
    before = snapshot(tmp_path)
    result = run_cli(*args, cwd=tmp_path)
    assert_one_error_line(result, *(f.format(tmp=tmp_path) for f in fragments))
    assert snapshot(tmp_path) == before, "a refused command changed files on disk"


def test_the_corpus_is_large():
    assert len(CASES) + len(RUN_CASES) >= 40


# --- the corpus: mistakes against a trained run -----------------------------------------

RUN_CASES: dict[str, tuple[Callable[[Path, Path], list[str]], tuple[str, ...]]] = {
    # id: (args(run_dir, config_path), fragments)
    "train_again_without_resume": (lambda run, config: ["train", str(config)], ("already holds a run", "--resume")),
    "resume_with_another_model": (
        lambda run, config: ["train", str(config), "--resume", "--model.hidden", "32"],
        ("config.toml: model.hidden differs from the run being resumed",),
    ),
    "resume_with_another_occupancy_grid": (
        lambda run, config: ["train", str(config), "--resume", "--render.occ-resolution", "16"],
        ("config.toml: render.occ_resolution differs",),
    ),
    "resume_with_another_mlp": (
        lambda run, config: ["train", str(config), "--resume", "--mlp.width", "128"],
        ("config.toml: mlp.width differs",),
    ),
    "resume_with_other_data": (
        lambda run, config: ["train", str(config), "--resume", "--data.aabb", "-2", "-2", "-2", "2", "2", "2"],
        ("config.toml: data.aabb differs",),
    ),
    "render_orbit_negative": (lambda run, config: ["render", str(run), "--orbit", "-1"], ("--orbit: must not be negative",)),
    "render_unknown_pairing": (
        lambda run, config: ["render", str(run), "--pairing", "target:blue"],
        ("unknown pairing 'target:blue'",),
    ),
    "render_unknown_split": (lambda run, config: ["render", str(run), "--split", "holdout"], ("--split",)),
}


@pytest.mark.slow  # trains, or needs the trained run
@pytest.mark.parametrize("name", list(RUN_CASES))
def test_bad_input_against_a_run(name, trained_run):
    """Mistakes against a trained run: one line, exit status 2, the run's files unchanged."""
    run_dir, _, config_path = trained_run
    args, fragments = RUN_CASES[name]
    before = snapshot(run_dir)
    result = run_cli(*args(run_dir, config_path), cwd=config_path.parent)
    assert_one_error_line(result, *fragments)
    assert snapshot(run_dir) == before, "a refused command changed the run"


@pytest.mark.slow  # trains, or needs the trained run
def test_a_checkpoint_that_does_not_fit_the_run(trained_run, tmp_path, tiny_data):
    """A whole fastjoint checkpoint of another model: one line naming it, not a size-mismatch traceback."""
    run_dir, _, _ = trained_run
    other = tmp_path / "runs" / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "latest.pt").symlink_to(run_dir / "checkpoints" / "latest.pt")
    (other / "config.toml").write_text(to_toml(tiny_config(tiny_data, tmp_path / "runs", model={"hidden": 32})))
    before = snapshot(tmp_path, run_dir)
    result = run_cli("eval", str(other), cwd=tmp_path)
    assert_one_error_line(result, f"{other}/checkpoints/latest.pt: does not fit this run's model")
    assert snapshot(tmp_path, run_dir) == before


# --- faults while training: a few steps of a small model --------------------------------


def small_config(w: Workspace, **train) -> str:
    """A config of a model that checkpoints in milliseconds."""
    return w.config(model=SMALL_MODEL, train={**SMALL_TRAIN, **train})


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["step"])


def lock_holder(run_dir: Path) -> str:
    path = run_dir / ".lock"
    return path.read_text().strip() if path.is_file() else ""


@pytest.mark.slow  # trains, or needs the trained run
def test_a_second_train_into_a_running_run_is_refused(tiny_data, tmp_path):
    """Two trainings into one run: the second ends at once, naming the first's PID, touching nothing."""
    w = Workspace(tmp_path, tiny_data)
    # The first writes config.toml and an empty metrics.jsonl, then nothing until it stops.
    config = small_config(w, steps=1_000_000, checkpoint_every=1_000_000, log_every=1_000_000)
    run_dir = w.runs / "tiny"
    log = tmp_path / "first.log"
    with started_cli("train", config, "--no-eval", "--no-render", cwd=tmp_path, log=log) as first:
        started = lambda: lock_holder(run_dir) == str(first.pid) and (run_dir / "metrics.jsonl").is_file()  # noqa: E731
        wait_for(first, log, started, "it took the run's lock", lambda: snapshot(run_dir))
        before = snapshot(run_dir)
        for extra in ([], ["--resume"]):
            second = run_cli("train", config, "--no-eval", "--no-render", *extra, cwd=tmp_path)
            assert_one_error_line(second, f"{run_dir}: another fastjoint train (PID {first.pid}) is writing this run")
        assert snapshot(run_dir) == before, "the refused train changed the run"
        assert first.poll() is None, "the first training stopped"
        first.send_signal(signal.SIGTERM)
        first.wait()
    assert first.returncode == 143, log.read_text()
    assert lock_holder(run_dir) == ""  # released
    # Once the first has gone, the run is free: --resume continues it.
    resumed = run_cli("train", config, "--resume", "--no-eval", "--no-render", "--max-seconds", "0.5", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.slow  # trains, or needs the trained run
def test_sigterm_writes_a_checkpoint_and_readers_see_whole_files(tiny_data, tmp_path):
    """SIGTERM: a checkpoint, one line, exit status 143; eval and render beside the training read whole files."""
    w = Workspace(tmp_path, tiny_data)
    config = small_config(w, steps=1_000_000, checkpoint_every=1, log_every=1)  # a checkpoint every step
    run_dir = w.runs / "tiny"
    log = tmp_path / "train.log"
    with started_cli("train", config, "--no-eval", "--no-render", cwd=tmp_path, log=log) as process:
        steps = lambda: logged_steps(run_dir)  # noqa: E731
        wait_for(process, log, lambda: len(steps()) >= 3, "three steps were logged", steps)
        # Readers beside the writer, which replaces latest.pt and previous.pt every step.
        for reader in (["eval", str(run_dir)], ["render", str(run_dir), "--pairing", "target:original"]):
            result = run_cli(*reader, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
        assert json.loads((run_dir / "eval.json").read_text())["step"] >= 3
        assert process.poll() is None, "the training stopped"
        process.send_signal(signal.SIGTERM)
        process.wait()
    # Beside the line that says at the start what `auto` made of the backgrounds, the stop is one line.
    lines = [line for line in log.read_text().splitlines() if line.strip() and not line.startswith("background auto: ")]
    assert process.returncode == 143, lines
    assert len(lines) == 1 and lines[0].startswith("terminated (SIGTERM) at step "), lines
    step = checkpoint_step(run_dir / "checkpoints" / "latest.pt")
    assert f"at step {step}; checkpoint written, continue with --resume" in lines[0]
    assert checkpoint_step(run_dir / "checkpoints" / "previous.pt") in (step - 1, step)
    assert not list((run_dir / "checkpoints").glob("*partial*"))


@pytest.mark.slow  # trains, or needs the trained run
@pytest.mark.parametrize("breakage", ["truncated", "foreign"])
def test_a_broken_latest_checkpoint_falls_back_to_the_previous(breakage, tiny_data, tmp_path):
    """A truncated or foreign latest.pt: eval and --resume use previous.pt, saying so in one line;
    the resumed run ends exactly where the unbroken one did.

    The last checkpoint is the one the analogy fit writes after the last step, so previous.pt is
    that step's checkpoint from before the fit: resumed from it, the run fits again (as a run
    stopped during the fit would) and ends with the same weights."""
    w = Workspace(tmp_path, tiny_data)
    config = small_config(w, steps=6, checkpoint_every=2, log_every=2)
    finished = run_cli("train", config, "--no-eval", "--no-render", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    checkpoints = w.runs / "tiny" / "checkpoints"
    whole = torch.load(checkpoints / "latest.pt", weights_only=True)
    before_fit = torch.load(checkpoints / "previous.pt", weights_only=True)
    assert whole["step"] == before_fit["step"] == 6 and whole["analogy_fitted"] and not before_fit["analogy_fitted"]
    latest = checkpoints / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:5000] if breakage == "truncated" else _foreign_checkpoint())
    problem = "cannot read checkpoint" if breakage == "truncated" else "not a fastjoint checkpoint"

    evaluated = run_cli("eval", str(w.runs / "tiny"), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    # (A 4-step model's features are noise: eval may also warn that the reference does not cover them.)
    warning = [line for line in evaluated.stderr.splitlines() if line.startswith("warning:") and "cover" not in line]
    assert len(warning) == 1 and problem in warning[0] and "previous.pt (step 6) instead" in warning[0], evaluated.stderr
    assert json.loads((w.runs / "tiny" / "eval.json").read_text())["step"] == 6

    resumed = run_cli("train", config, "--resume", "--no-eval", "--no-render", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "previous.pt (step 6) instead" in resumed.stderr and "analogy fit:" in resumed.stdout + resumed.stderr
    final = torch.load(latest, weights_only=True)
    assert final["step"] == 6 and final["analogy_fitted"]
    for key, value in whole["model"].items():
        assert torch.equal(final["model"][key], value), key
    kept = torch.load(checkpoints / "previous.pt", weights_only=True)  # the broken file never became previous.pt
    assert kept["step"] == 6 and not kept["analogy_fitted"]


@pytest.mark.slow  # trains, or needs the trained run
def test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    """A loss that turns NaN: one line naming the step and the learning rate, the checkpoint
    untouched; --resume with a lower learning rate (which the resumed run uses) finishes."""
    w = Workspace(tmp_path, tiny_data)
    config = _one_step_run(w, tmp_path, steps=12, checkpoint_every=4)
    checkpoints = w.runs / "tiny" / "checkpoints"
    before = snapshot(checkpoints)
    result = run_cli("train", config, "--resume", "--train.lr", "1e36", "--no-eval", "--no-render", cwd=tmp_path)
    line = assert_one_error_line(result, "train.lr: training diverged at step 3 (the loss of", "is nan", "(1e+36) is likely too high")
    assert "the last good checkpoint (step 1) is kept; --resume with a lower train.lr continues from it" in line
    assert snapshot(checkpoints) == before, "the diverged state was saved"

    resumed = run_cli("train", config, "--resume", "--train.lr", "0.02", "--no-eval", "--no-render", cwd=tmp_path)
    assert resumed.returncode == 0 and "finished at step 12" in resumed.stdout, resumed.stderr
    lines = [json.loads(line) for line in (w.runs / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [12]
    assert lines[0]["lr"] == pytest.approx(0.02 * 0.33**3)  # the new rate, decayed three times by step 12
    state = torch.load(checkpoints / "latest.pt", weights_only=True)
    assert all(torch.isfinite(value).all() for value in state["model"].values())


@pytest.mark.slow  # trains, or needs the trained run
def test_an_overflowing_update_is_a_diverging_run_too(tiny_data, tmp_path):
    w = Workspace(tmp_path, tiny_data)
    result = run_cli("train", small_config(w, steps=8, lr=1e300), "--no-eval", "--no-render", cwd=tmp_path)
    assert_one_error_line(result, "train.lr: training diverged at step 1", "no checkpoint was written")
    assert not (w.runs / "tiny" / "checkpoints").exists()


@pytest.mark.slow  # trains, or needs the trained run
def test_a_fresh_start_after_a_run_that_died_early_starts_metrics_anew(tiny_data, tmp_path):
    """A run killed before its first checkpoint cannot be resumed; training it again drops the dead lines."""
    w = Workspace(tmp_path, tiny_data)
    config = small_config(w, steps=4, log_every=2, checkpoint_every=100)
    run_dir = w.runs / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(Path(config).read_text())
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": step, "loss": 1.0}) + "\n" for step in (2, 4, 6, 8)) + '{"step": 1')
    refused = run_cli("train", config, "--resume", "--no-eval", "--no-render", cwd=tmp_path)
    assert_one_error_line(refused, f"{run_dir}/checkpoints/latest.pt: no checkpoint to resume")
    fresh = run_cli("train", config, "--no-eval", "--no-render", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert logged_steps(run_dir) == [2, 4]
    assert all("psnr/target:original" in json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())


# --- the disk: full, read-only ----------------------------------------------------------


class Tmpfs:
    """A small tmpfs mounted for a test (needs root; the test is skipped where it cannot be mounted)."""

    def __init__(self, where: Path, size: str) -> None:
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here to fill a disk ({mounted.stderr.strip() or 'mount failed'})")

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.where)], check=True)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.where)
        return stats.f_bavail * stats.f_frsize

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.where)], capture_output=True)


def _mount_possible() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


needs_mount = pytest.mark.skipif(not _mount_possible(), reason="mounting a tmpfs (a full or read-only disk) needs root")


def _one_step_run(w: Workspace, tmp_path: Path, **train) -> str:
    """A run of the small model stopped after one step (by --max-seconds), its checkpoint written."""
    config = small_config(w, **{"steps": 4, "checkpoint_every": 2, **train})
    first = run_cli("train", config, "--no-eval", "--no-render", "--max-seconds", "1e-9", cwd=tmp_path)
    assert first.returncode == 0 and "stopped by --max-seconds at step 1" in first.stdout, first.stderr
    return config


@pytest.mark.slow  # trains, or needs the trained run
@needs_mount
def test_a_full_disk_is_one_line_and_loses_nothing(tiny_data, tmp_path):
    disk = Tmpfs(tmp_path / "disk", "8m")
    try:
        w = Workspace(tmp_path, tiny_data)
        w_disk = Workspace(disk.where, tiny_data)
        config = _one_step_run(w_disk, tmp_path)
        run_dir = w_disk.runs / "tiny"
        size = (run_dir / "checkpoints" / "latest.pt").stat().st_size
        # Leave room for config.toml but not for the next checkpoint.
        filler = disk.where / "filler"
        with open(filler, "wb") as handle:
            handle.write(b"\0" * max(0, disk.free_bytes() - size // 2))
        before = snapshot(run_dir)
        result = run_cli("train", config, "--resume", "--no-eval", "--no-render", cwd=w.root)
        assert_one_error_line(result, f"{run_dir}/checkpoints/latest.pt: no space left on device")
        assert snapshot(run_dir) == before, "the full disk cost a file"
        assert not list(run_dir.rglob("*partial*"))
        filler.unlink()
        again = run_cli("train", config, "--resume", "--no-eval", "--no-render", cwd=w.root)
        assert again.returncode == 0 and "finished at step 4" in again.stdout, again.stderr
    finally:
        disk.unmount()


@pytest.fixture(scope="module")
def read_only_run(tiny_data, tmp_path_factory):
    """A one-step run on a tmpfs then remounted read-only: (its config, its run folder, the workspace)."""
    if not _mount_possible():
        pytest.skip("mounting a read-only tmpfs needs root")
    root = tmp_path_factory.mktemp("read-only")
    disk = Tmpfs(root / "disk", "8m")
    try:
        w = Workspace(disk.where, tiny_data)
        config = _one_step_run(w, root)
        disk.read_only()
        yield config, w.runs / "tiny", root
    finally:
        disk.unmount()


READ_ONLY_CASES = {
    "train_resume": (lambda config, run: ["train", config, "--resume", "--no-eval", "--no-render"], "{run}/.lock: read-only file system"),
    "train_a_new_run": (lambda config, run: ["train", config, "--name", "other"], "{run}/../other: read-only file system"),
    "eval": (lambda config, run: ["eval", str(run)], "{run}/eval.json: read-only file system"),
    "render": (lambda config, run: ["render", str(run)], "{run}/renders: read-only file system"),
    "analyze": (lambda config, run: ["analyze", str(run)], "{run}/analysis: read-only file system"),
}


@pytest.mark.slow  # trains, or needs the trained run
@pytest.mark.parametrize("name", list(READ_ONLY_CASES))
def test_a_read_only_folder_is_one_line(name, read_only_run):
    config, run_dir, cwd = read_only_run
    args, fragment = READ_ONLY_CASES[name]
    before = snapshot(run_dir)
    result = run_cli(*args(config, run_dir), cwd=cwd)
    expected = fragment.format(run=run_dir).replace(f"{run_dir}/../", f"{run_dir.parent}/")
    assert_one_error_line(result, expected)
    assert snapshot(run_dir) == before


@pytest.mark.slow  # starts the CLI (a fresh process importing torch, for each case)
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits")
def test_a_folder_without_write_permission_is_one_line(tiny_data, tmp_path):
    w = Workspace(tmp_path, tiny_data)
    w.runs.mkdir()
    w.runs.chmod(0o555)
    try:
        result = run_cli("train", w.config(), cwd=tmp_path)
        assert_one_error_line(result, f"{w.runs}/tiny: permission denied")
    finally:
        w.runs.chmod(0o755)


def test_environment_errors_name_the_path_and_bugs_keep_their_traceback():
    """The mapping itself: a full disk is one line; an OSError of fastjoint's own making is not hidden."""
    import errno

    from fastjoint.cli import environment_error

    line = environment_error(OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoints/latest.pt"))
    assert line == "runs/x/checkpoints/latest.pt: no space left on device; free some space (files already written are intact)"
    assert environment_error(OSError(errno.EBADF, "Bad file descriptor")) is None
    assert environment_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None
