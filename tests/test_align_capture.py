"""`fastjoint align-poses`: a capture's photos aligned to a trained scene and the capture written again.

A run trained on the tiny analogy's target written as a nerfstudio capture; then a few of the capture's
photos are turned by 3 degrees about their centres (as COLMAP leaves a photo it could not pin down).
align-poses must turn those photos most of the way back, leave the others where they were, and write a
capture that differs from its source in the poses alone. The COLMAP writer is checked on its own.
(Whether a scene trained on the wrong poses turns them back is the benchmark's question: benchmarks/README,
"Second-phase pose refinement".)
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import FIXTURES, TINY_STEPS, fresh_seed, run_cli, tiny_config, write_config
from fastjoint.align import _write_colmap
from fastjoint.data import load_split
from fastjoint.data.colmap import model_folder, read_model, to_pose
from fastjoint.model.poses import so3_exp
from fastjoint.scenes import make_datasets

TURNED = 4  # training photos whose poses are turned
TURN_DEG = 3.0


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:  # two [4, 4] poses -> the angle between their rotations
    cosine = (np.trace(a[:3, :3] @ b[:3, :3].T) - 1) / 2
    return math.degrees(math.acos(min(1.0, max(-1.0, cosine))))


@pytest.fixture(scope="module")
def turned_capture(tmp_path_factory):
    """A run trained on the tiny target as a nerfstudio capture, whose TURNED training photos were turned
    afterwards; the run, the capture, the true poses by file path, the turned file paths and the seed."""
    folder = tmp_path_factory.mktemp("capture")
    kit = make_datasets(str(FIXTURES / "tiny.toml"), root=folder / "kit", format="nerfstudio")
    capture = folder / "capture"
    shutil.copytree(kit / "target" / "original", capture)
    config = tiny_config(kit, folder / "runs", train={"steps": TINY_STEPS})
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, target=str(capture)))
    result = run_cli("train", str(write_config(config, folder / "tiny.toml")), "--no-eval", "--no-render", cwd=folder)
    assert result.returncode == 0, result.stderr

    meta = json.loads((capture / "transforms.json").read_text())
    truth = {frame["file_path"]: np.array(frame["transform_matrix"]) for frame in meta["frames"]}
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(meta["train_filenames"]), generator=generator)[:TURNED].tolist()
    turned = [meta["train_filenames"][k] for k in chosen]
    axes = torch.nn.functional.normalize(torch.randn(TURNED, 3, generator=generator, dtype=torch.float64), dim=1)
    rotations = so3_exp(axes * math.radians(TURN_DEG)).numpy()
    for frame in meta["frames"]:
        if frame["file_path"] in turned:
            pose = np.array(frame["transform_matrix"])
            pose[:3, :3] = rotations[turned.index(frame["file_path"])] @ pose[:3, :3]
            frame["transform_matrix"] = pose.tolist()
    (capture / "transforms.json").write_text(json.dumps(meta, indent=1))
    return config.run_dir, capture, truth, turned, seed


@pytest.mark.slow  # trains, and starts the CLI
def test_align_poses_turns_the_photos_that_disagree_back_and_writes_the_capture_again(turned_capture, tmp_path):
    run_dir, capture, truth, turned, seed = turned_capture
    checkpoint = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    out = tmp_path / "aligned"
    result = run_cli("align-poses", str(run_dir), str(out))
    assert result.returncode == 0, result.stderr
    assert f"{len(truth)} photos aligned" in result.stdout and str(out) in result.stdout, result.stdout

    source, written = json.loads((capture / "transforms.json").read_text()), json.loads((out / "transforms.json").read_text())
    for key in source:  # the same capture: intrinsics, split lists, file paths; only the poses moved
        if key != "frames":
            assert written[key] == source[key], key
    assert [f["file_path"] for f in written["frames"]] == [f["file_path"] for f in source["frames"]]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in (capture / "images").iterdir())

    given = {f["file_path"]: np.array(f["transform_matrix"]) for f in source["frames"]}
    found = {f["file_path"]: np.array(f["transform_matrix"]) for f in written["frames"]}
    before = [angle_deg(given[name], truth[name]) for name in turned]
    after = [angle_deg(found[name], truth[name]) for name in turned]
    assert min(before) > TURN_DEG - 0.01
    assert np.median(after) < 0.5 * TURN_DEG, (seed, before, after)
    steady = [angle_deg(found[name], truth[name]) for name in truth if name not in turned]
    assert np.median(steady) < 0.5, (seed, steady)
    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == checkpoint  # the run is not changed

    # The written capture loads as the source does, with the same views in each split.
    for split in ("train", "test"):
        assert load_split(out, split).names == load_split(capture, split).names


@pytest.mark.slow
def test_align_poses_refuses_in_one_line(turned_capture, trained_run, tmp_path):
    run_dir, *_ = turned_capture
    (tmp_path / "taken").mkdir()
    refused = run_cli("align-poses", str(run_dir), str(tmp_path / "taken"))
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "already exists" in refused.stderr
    blender = run_cli("align-poses", str(trained_run[0]), str(tmp_path / "new"))  # the kit's Blender target: exact poses
    assert blender.returncode == 2 and blender.stderr.strip().count("\n") == 0, blender.stderr
    assert "blender dataset has exact poses" in blender.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.partial").exists()


def test_the_colmap_writer_replaces_the_extrinsics_and_keeps_the_rest(tmp_path):
    kit = make_datasets(str(FIXTURES / "tiny.toml"), root=tmp_path / "kit", format="colmap")
    folder = tmp_path / "capture"
    shutil.copytree(kit / "target" / "original", folder)
    model = read_model(model_folder(folder))
    generator = torch.Generator().manual_seed(fresh_seed())
    moved = {}
    for image in model.images[::3]:  # a third of the images get new poses
        pose = to_pose(image.qvec, image.tvec)
        pose[:3, :3] = so3_exp(torch.randn(1, 3, generator=generator, dtype=torch.float64) * 0.05)[0].numpy() @ pose[:3, :3]
        pose[:3, 3] += torch.randn(3, generator=generator, dtype=torch.float64).numpy() * 0.1
        moved[f"images/{image.name}"] = pose
    _write_colmap(folder, moved)
    again = read_model(model_folder(folder))
    assert again.cameras == model.cameras and [i.name for i in again.images] == [i.name for i in model.images]
    assert again.images_file.suffix == model.images_file.suffix
    for old, new in zip(model.images, again.images, strict=True):
        expected = moved.get(f"images/{old.name}", to_pose(old.qvec, old.tvec))
        np.testing.assert_allclose(to_pose(new.qvec, new.tvec), expected, atol=1e-9)
