"""`fastjoint process` on the scene kit's renders given as plain photos: its poses, and a training on them, against the truth.

    python -m benchmarks.process [--size 192] [--scene digger] [--style pattern] [--noise] [--steps 1500] [--seeds 0 1 2] [--repeats 3] [--rounds 2] [--runs runs/process]
    python -m benchmarks.process --posed DATASET [--repeats 3]
    python -m benchmarks.process ... --resume   (the same arguments: a stopped benchmark goes on)

With `--posed`, a posed dataset's photos (a real capture, say) go through `process` and the
poses found are compared to the dataset's own, as in step 2 below; nothing is trained.

The kit's `paper` recipe renders `--scene` in `--style` at `--size` pixels from its training and
test cameras. The renders are composited on mid-grey and written as RGB PNGs with no poses:
plain photos. (The checked `pattern` paint gives SIFT texture, but its checks repeat, so they
match one another across the scene; `--noise` turns the style's patterns into value noise,
which does not repeat. The kit's plain materials are flat colours.) Then:

1. `fastjoint process PHOTOS OUT` (COLMAP through pycolmap) poses them;
2. (`--repeats` times) the poses it found are aligned to the true ones by the best similarity (Umeyama, on the
   camera centres), and each camera's rotation error (degrees) and position error (as a share
   of the true cameras' distance from the scene's centre) are reported;
3. the same photos with their true poses (a nerfstudio folder, pinhole camera) and the processed
   dataset are each trained as the target of the kit's recolour analogy for `--steps` steps at
   each of `--seeds` (neither declares an `aabb_scale`, so `data.unbounded = "auto"` keeps both
   in the box), and the target's held-out views (every 8th photo by name, the same photos in
   both) are scored twice: from their poses as the dataset gives them, then aligned to their
   photos with the scene fixed (`fastjoint eval --align-poses`). A processed held-out view's own
   pose is off as much as a training view's, and costs it decibels that say nothing of the
   training; the aligned score leaves that out.

4. (`--rounds` times, at each seed) `fastjoint align-poses` aligns every photo of the processed
   capture to the last training's scene, the scene fixed, and the capture so written (its pose
   errors reported as in step 2) is trained again afresh and scored as in step 3: round 1 aligns
   to the processed training, round 2 to round 1's, and so on.

Issue 22's targets: poses within 1 degree and 1% of the truth, and the training on them within
1 dB of the one on the true poses.

A benchmark starts afresh (its `--runs` folder emptied) unless `--resume` is given. With it, a
benchmark stopped part way (one seed takes 25 minutes at `--size 384` on 2 cores) goes on where
it stopped: the arguments it was started with are kept in `--runs`/benchmark.json and must be
given again; the photos, `process` runs and aligned captures already written are kept (each is
written whole or not at all), a finished training is read back, an interrupted one resumes from
its checkpoint (`fastjoint train --resume`), and an interrupted `eval --align-poses` starts again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
from rich.progress import track

from benchmarks.common import REPO, RESULTS, fastjoint, kit_analogy, train_and_score, write_results
from fastjoint.checkpoints import has_checkpoint
from fastjoint.data import load_split
from fastjoint.files import remove_partials, write_image, write_json
from fastjoint.scenes.make import render_view, view_poses
from fastjoint.scenes.recipe import Recipe, find_recipe, load_recipe, with_size

GREY = 0.5
RAW = "eval-raw.json"  # a run's eval.json as training wrote it, before `eval --align-poses` rewrites it: a stopped benchmark's runs stay readable
STATE = "benchmark.json"  # in --runs: the arguments the benchmark was started with, and each `process` run's seconds


def as_noise(recipe: Recipe, style: str) -> Recipe:
    """The recipe with `style`'s patterns turned into value noise (same scale and colours)."""
    materials = {
        material: {**fields, "pattern": dataclasses.replace(fields["pattern"], kind="noise")} if "pattern" in fields else fields
        for material, fields in recipe.styles[style].get("materials", {}).items()
    }
    return dataclasses.replace(recipe, styles={**recipe.styles, style: {**recipe.styles[style], "materials": materials}})


def write_photos(folder: Path, size: int, scene: str, style: str, noise: bool = False) -> tuple[list[str], np.ndarray, float]:
    """The renders as plain RGB photos; their names, true camera-to-world poses [n, 4, 4] and focal length."""
    recipe = with_size(load_recipe(find_recipe("paper")), size)
    if noise:
        recipe = as_noise(recipe, style)
    splits = view_poses(recipe)
    poses = np.concatenate([splits["train"], splits["test"]])
    folder.mkdir(parents=True, exist_ok=True)
    remove_partials(folder)  # a photo a killed benchmark was writing: `process` takes every image in the folder
    names = [f"v_{k:03d}.png" for k in range(len(poses))]
    for name, pose in zip(names, track(poses, description="rendering the kit's views"), strict=True):
        if (folder / name).is_file():  # written by the benchmark this one resumes
            continue
        rgba = render_view(recipe, scene, style, pose).astype(np.float64) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + GREY * (1.0 - rgba[..., 3:]) if rgba.shape[-1] == 4 else rgba
        write_image(folder / name, np.round(rgb * 255.0).astype(np.uint8))
    focal = 0.5 * size / math.tan(0.5 * recipe.camera.angle_x)
    return names, poses, focal


def write_truth(folder: Path, photos: Path, names: list[str], poses: np.ndarray, size: int, focal: float) -> None:
    """The photos with their true poses, as a nerfstudio dataset (no split lists: every 8th held out, as the processed one)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(photos / name, folder / "images" / name)
    meta = {
        "camera_model": "PINHOLE",
        **{"fl_x": focal, "fl_y": focal, "cx": size / 2, "cy": size / 2, "w": size, "h": size},
        "frames": [{"file_path": f"images/{n}", "transform_matrix": p.tolist()} for n, p in zip(names, poses, strict=True)],
    }
    (folder / "transforms.json").write_text(json.dumps(meta, indent=1))


def umeyama(found: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:  # [n, 3] each -> scale, rotation, shift
    """The similarity x -> s R x + t that brings `found` closest to `truth` (least squares)."""
    mf, mt = found.mean(0), truth.mean(0)
    a, b = found - mf, truth - mt
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = (s * np.diag(d)).sum() / (a**2).sum()
    return scale, rotation, mt - scale * rotation @ mf


def pose_errors(dataset: Path, names: list[str], poses: np.ndarray) -> dict:
    """Each registered camera's rotation (degrees) and position error after the best similarity."""
    index = {name: k for k, name in enumerate(names)}
    found, truth = [], []
    for split in ("train", "test"):
        views = load_split(dataset, split)
        for pose, name in zip(views.poses.numpy().astype(np.float64), views.names, strict=True):
            found.append(pose)
            truth.append(poses[index[Path(name).name]])
    found, truth = np.stack(found), np.stack(truth)
    scale, rotation, shift = umeyama(found[:, :3, 3], truth[:, :3, 3])
    centres = scale * found[:, :3, 3] @ rotation.T + shift
    radius = np.linalg.norm(truth[:, :3, 3] - truth[:, :3, 3].mean(0), axis=1).mean()
    position = np.linalg.norm(centres - truth[:, :3, 3], axis=1) / radius
    relative = np.einsum("ij,njk,nlk->nil", rotation, found[:, :3, :3], truth[:, :3, :3])  # R Rf Rt^T
    angles = np.degrees(np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)))
    camera = load_split(dataset, "train").camera
    return {
        "registered": len(found),
        "rotation_deg_max": float(angles.max()),
        "rotation_deg_median": float(np.median(angles)),
        "position_share_max": float(position.max()),
        "position_share_median": float(np.median(position)),
        "focal_found": float(camera.focal),
    }


def train(target: Path, runs: Path, name: str, steps: int, seed: int) -> dict:
    """The kit's recolour analogy with `target` as the target, trained for `steps` at `seed`; its
    target:original on the held-out views as they are, then with their poses aligned to the photos
    (`fastjoint eval --align-poses`)."""
    run_dir = runs / name
    if not (run_dir / RAW).is_file():  # not trained yet, or stopped before its eval.json
        resume = ["--resume"] if has_checkpoint(run_dir) else []  # stopped part way: it goes on
        options = ["--train.steps", str(steps), "--train.seed", str(seed), *resume]
        train_and_score(kit_analogy(target, name, runs), runs, options=options)
        shutil.copyfile(run_dir / "eval.json", run_dir / RAW)
    raw = json.loads((run_dir / RAW).read_text())
    evaluation = json.loads((run_dir / "eval.json").read_text())
    if not evaluation.get("aligned_poses"):
        fastjoint("eval", str(run_dir), "--align-poses")
        evaluation = json.loads((run_dir / "eval.json").read_text())
    aligned = evaluation["aligned_poses"]["target:original"]["rotation_deg"]
    return {
        **raw["pairings"]["target:original"],
        "psnr_aligned": evaluation["pairings"]["target:original"]["psnr"],
        "alignment_deg_median": float(np.median(aligned)),
        "alignment_deg_max": max(aligned),
        "train_seconds": raw["train_seconds"],
    }


def summary(each: list[dict]) -> dict:
    """Mean, lowest and highest over the seeds of the raw and aligned PSNR."""
    out = {}
    for key in ("psnr", "psnr_aligned"):
        values = [scored[key] for scored in each]
        out |= {f"{key}_mean": float(np.mean(values)), f"{key}_min": min(values), f"{key}_max": max(values)}
    return out


def worst(each: list[dict]) -> dict:
    """Over the seeds: the median and the largest of each seed's median and worst camera errors."""
    keys = ("rotation_deg_median", "rotation_deg_max", "position_share_median", "position_share_max")
    return {f"{key}_over_seeds": [float(np.median([e[key] for e in each])), max(e[key] for e in each)] for key in keys}


def processed(photos: Path, runs: Path, repeats: int, names: list[str], poses: np.ndarray) -> tuple[list[dict], list[float | None]]:
    """`fastjoint process` on `photos`, `repeats` times (runs/processed, processed-1, ...); each run's pose errors and
    seconds (None: a run a resumed benchmark found and had no time for)."""
    errors = []
    state = json.loads((runs / STATE).read_text())
    folders = [runs / ("processed" if k == 0 else f"processed-{k}") for k in range(repeats)]
    for folder in folders:
        if not folder.is_dir():  # `process` writes OUT.partial and renames it when done
            start = time.time()
            done = fastjoint("process", str(photos), str(folder))
            state["process_seconds"][folder.name] = time.time() - start
            write_json(runs / STATE, state)  # whole or not at all: a benchmark killed while writing it can still be resumed
            print(done.stdout.strip().splitlines()[-2])
        errors.append(pose_errors(folder, names, poses))
        print(json.dumps(errors[-1], indent=1))
    return errors, [state["process_seconds"].get(folder.name) for folder in folders]


def against_posed(dataset: Path, runs: Path, repeats: int, results: Path) -> None:
    """`process` on a posed dataset's photos, its poses against the dataset's own (every split)."""
    names, poses, sources = [], [], []
    for split in ("train", "test"):
        views = load_split(dataset, split)
        names += [Path(name).name for name in views.names]
        sources += [dataset / name for name in views.names]  # relative to the dataset (an absolute name stays itself)
        poses += list(views.poses.numpy().astype(np.float64))
    photos = runs / "photos"
    photos.mkdir(exist_ok=True)
    for name, source in zip(names, sources, strict=True):
        shutil.copyfile(source, photos / name)
    errors, seconds = processed(photos, runs, repeats, names, np.stack(poses))
    payload = {"dataset": str(dataset), "photos": len(names), "process_seconds": seconds, "poses_each_run": errors}
    print(write_results(f"process-posed-{dataset.name}", payload, results))


def arguments(args: argparse.Namespace) -> dict:
    """The arguments that decide what a benchmark measures (not where it writes), as JSON values."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key not in ("runs", "results", "resume")
    }


def begin(runs: Path, given: dict) -> None:
    """`runs` emptied, with the benchmark's state: the arguments it is started with."""
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    write_json(runs / STATE, {"arguments": given, "process_seconds": {}})


def started(runs: Path, given: dict) -> None:
    """Stop with one line (exit 2) unless `runs` holds a benchmark started with the arguments `given`."""
    state = runs / STATE
    if not state.is_file():
        fail(f"{state}: not found: --resume goes on with a benchmark started in --runs, and none was")
    try:
        before = json.loads(state.read_text())["arguments"]
    except (json.JSONDecodeError, KeyError, TypeError):
        fail(f"{state}: not a benchmark's state (no 'arguments'): start afresh without --resume")
    differ = [f"--{key} {before.get(key)} (now {value})" for key, value in given.items() if before.get(key) != value]
    if differ:
        fail(f"{state}: the benchmark was started with {', '.join(differ)}: give the same arguments, or start afresh without --resume")


def fail(line: str) -> NoReturn:
    print(line, file=sys.stderr)
    raise SystemExit(2)


def command_line() -> argparse.ArgumentParser:
    """The benchmark's arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=192, help="the renders' width and height in pixels")
    parser.add_argument("--scene", default="digger")
    parser.add_argument("--style", default="pattern")
    parser.add_argument(
        "--noise", action="store_true", help="the style's patterns become value noise, which SIFT can match (same scale and colours)"
    )
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="every training is run at each seed")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="times `process` runs on the same photos (COLMAP's multi-threaded RANSAC differs run to run); the first is trained",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="at each seed, times `fastjoint align-poses` aligns the capture to the last training and it is trained again",
    )
    parser.add_argument(
        "--posed",
        type=Path,
        help="instead of the kit: `process` the photos of this posed dataset (nerfstudio or COLMAP) and compare its poses to the dataset's (no training)",
    )
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "process")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on with the benchmark stopped in --runs, given the same arguments (without it, --runs is emptied first)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = command_line().parse_args(argv)
    runs = args.runs.resolve()
    if args.resume:
        started(runs, arguments(args))
    else:
        begin(runs, arguments(args))
    if args.posed is not None:
        return against_posed(args.posed.resolve(), runs, args.repeats, args.results)
    photos = runs / "photos"
    names, poses, focal = write_photos(photos, args.size, args.scene, args.style, args.noise)
    repeats, seconds = processed(photos, runs, args.repeats, names, poses)
    errors = {**repeats[0], "focal_true": focal}
    write_truth(runs / "truth", photos, names, poses, args.size, focal)
    trainings: dict[str, list[dict]] = {"truth": [], "processed": []}
    aligned_poses: dict[str, list[dict]] = {}  # round -> each seed's pose errors after align-poses
    for seed in args.seeds:
        trainings["truth"].append(train(runs / "truth", runs, f"truth-s{seed}", args.steps, seed))
        trainings["processed"].append(train(runs / "processed", runs, f"processed-s{seed}", args.steps, seed))
        last = runs / f"processed-s{seed}"
        for k in range(1, args.rounds + 1):
            kind = f"aligned-{k}"
            capture = runs / f"{kind}-s{seed}-capture"
            if not capture.is_dir():  # align-poses writes OUT.partial and renames it when done
                fastjoint("align-poses", str(last), str(capture))
            aligned_poses.setdefault(kind, []).append(pose_errors(capture, names, poses))
            trainings.setdefault(kind, []).append(train(capture, runs, f"{kind}-s{seed}", args.steps, seed))
            last = runs / f"{kind}-s{seed}"
        print(json.dumps({kind: each[-1] for kind, each in trainings.items()}, indent=1))
    scores = {kind: {"seeds": each, **summary(each)} for kind, each in trainings.items()}
    payload = {
        "photos": len(names),
        "size": args.size,
        "scene": args.scene,
        "style": args.style + (" (as noise)" if args.noise else ""),
        "steps": args.steps,
        "seeds": args.seeds,
        "rounds": args.rounds,
        "process_seconds": seconds,
        "poses": errors,
        "poses_each_run": repeats,
        "poses_aligned": {kind: {"seeds": each, **worst(each)} for kind, each in aligned_poses.items()},
        "target_original": scores,
        **{
            f"{key}_difference_db": {
                kind: scores[kind][f"{key}_mean"] - scores["truth"][f"{key}_mean"] for kind in scores if kind != "truth"
            }
            for key in ("psnr", "psnr_aligned")
        },
    }
    print(write_results("process", payload, args.results))


if __name__ == "__main__":
    main()
