"""The `fastjoint` command: every verb a frozen dataclass, parsed by tyro.

This module only parses and calls. A user mistake ends with one line on stderr naming the
file or key at fault, and exit status 2: tyro's refusals are condensed to one line by
`_parse`, and command-line values go through the same checks as the config file's. So does
a fault of the machine (a full disk, a read-only or forbidden folder), naming the path.
Ctrl-C and SIGTERM stop a command with one line and exit status 130 or 143.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import tyro

from fastjoint import __version__
from fastjoint.config import RETIRED_OPTIONS, Config, checked, load_config, retired_message
from fastjoint.errors import Interrupted, UserError, raise_interrupted
from fastjoint.files import ENVIRONMENT_ERRNOS

DEFAULT_CONFIG = Path("configs") / "demo.toml"
Device = Optional[Literal["auto", "cpu", "cuda"]]


def _format_names() -> type:
    """The dataset-format table's names as a type: tyro checks --format against them and --help lists them.

    Read when tyro builds `scenes make`'s parser, not when this module loads: the table's
    loaders import torch, which the other verbs' mistakes and --help can do without.
    """
    from fastjoint.data.formats import FORMATS

    return Literal[tuple(FORMATS)]  # type: ignore[return-value]


DEFAULT_FORMAT = "blender"  # fastjoint.data.formats.DEFAULT_FORMAT, named here so that --help loads no torch
FormatName = Annotated[str, tyro.conf.arg(constructor_factory=_format_names, help_behavior_hint=f"(default: {DEFAULT_FORMAT})")]
RunFolder = Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN", help="the run folder, e.g. runs/demo")]


@dataclass(frozen=True)
class Train:
    """Train target:original, reference:original and reference:<style> for every desired style,
    jointly; then evaluate, and render every transfer target:<style>.

    Usage: fastjoint train [CONFIG] [OPTIONS]. CONFIG is a TOML file (default
    configs/demo.toml) whose values are the defaults below; any key can be overridden here.
    """

    config: Annotated[Config, tyro.conf.arg(name="")]
    resume: bool = False
    """Continue the run from checkpoints/latest.pt."""
    max_seconds: Optional[float] = None
    """Stop training after this many seconds of training (a checkpoint is written; --resume continues)."""
    eval: bool = True
    """When training stops, evaluate on the test views (RUN/eval.json)."""
    render: bool = True
    """When training stops, render every transfer target:<style> (test views, orbit video)."""
    orbit: int = 48
    """Frames of the orbit video rendered when training stops (0: none)."""

    def __call__(self) -> int:
        _check(self.orbit >= 0, "--orbit", "must not be negative")
        _check(self.max_seconds is None or self.max_seconds > 0, "--max-seconds", "must be positive")
        config = checked(self.config)
        from fastjoint.train import train

        summary = train(config, resume=self.resume, max_seconds=self.max_seconds, check_test=self.eval or self.render)
        how = "finished" if summary.finished else "stopped by --max-seconds"
        print(f"{how} at step {summary.step} after {summary.train_seconds:.0f} s; run in {summary.run_dir}")
        if not (self.eval or self.render):
            return 0
        from fastjoint.run import load_run

        run = load_run(summary.run_dir)
        if self.eval:
            _evaluate(run)
        if self.render:
            for pairing in config.data.pairings.transfers:
                _render(run, pairing.name, "test", self.orbit, video=self.orbit > 0)
        return 0


@dataclass(frozen=True)
class Eval:
    """Score every trained pairing and every transfer with ground truth on the test views; writes RUN/eval.json."""

    run: RunFolder
    device: Device = None
    """Where to render; None: the run's own device."""
    background: Optional[str] = None
    """Render every pairing (and composite RGBA ground truth) on this colour: white, black or #rrggbb; None: each pairing's own background."""

    renderer: Literal["exact", "fast"] = "exact"
    """exact: the trained model at every sample (the scores of record); fast: the scenes baked first, each
    style a lookup table (within about 0.1 dB, see the README's "Fast rendering")."""
    align_poses: bool = False
    """First align each test view's pose to its photo, the scene fixed (a rotation and shift per view, 100
    Gauss-Newton steps with a prior toward the given pose), as pose-refining methods are scored: for
    captures whose test poses, estimated from the photos like the training poses, are off by a pixel or
    more. eval.json records each view's correction."""

    def __call__(self) -> int:
        background = _background(self.background)
        if self.align_poses and self.renderer == "fast":
            raise UserError("--align-poses: needs --renderer exact (the baked scene has no gradient to align with)")
        _evaluate(_load(self.run, self.device, self.renderer), background, self.align_poses)
        return 0


@dataclass(frozen=True)
class Render:
    """Render a pairing of a trained run to RUN/renders/<scene>_<style>/ (PNGs, optionally an MP4): a split's
    views, an orbit, a path made from the training cameras, or a camera-path file, at any size."""

    run: RunFolder
    pairing: Optional[str] = None
    """scene:style to render; None: the run's first transfer, target:<style>."""
    split: Literal["train", "val", "test"] = "test"
    """Whose camera views to render (without --camera-path or --path)."""
    orbit: int = 0
    """Also render this many frames orbiting the scene."""
    video: bool = False
    """Write an MP4 of the orbit (or of the views without --orbit); paths always get one."""
    camera_path: Optional[Path] = None
    """Render this camera-path JSON (nerfstudio's format, as the viewer saves it; poses in the run's
    frame) instead of a split's views: <file stem>_NNN.png and <file stem>.mp4 at its fps."""
    camera_path_frame: Literal["run", "dataset"] = "run"
    """The frame of --camera-path's poses: run (fastjoint's, as the viewer saves them) or dataset (the
    scene's own transforms.json / COLMAP frame, before fastjoint centres and scales it into the box)."""
    path: Optional[Literal["orbit", "interpolate", "spiral"]] = None
    """Render a path made from the scene's training cameras instead of a split's views: orbit (around
    the box), interpolate (smoothly through 8 training cameras), spiral (forward-facing, for captures an
    orbit does not suit); <path>_NNN.png and <path>.mp4."""
    frames: int = 120
    """Frames of --path."""
    fps: Optional[float] = None
    """The video's frame rate; None: the camera path's own, else 24 frames/s."""
    size: Optional[str] = None
    """Render at this size: a height (e.g. 1080; the width keeps the aspect) or WIDTHxHEIGHT (e.g. 1920x1080);
    None: the dataset's own (or the camera path's render_width x render_height)."""
    device: Device = None
    """Where to render; None: the run's own device."""
    background: Optional[str] = None
    """Render on this colour: white, black or #rrggbb; None: the pairing's own background (its dataset's)."""
    renderer: Literal["fast", "exact"] = "fast"
    """fast: the scenes baked first (a few seconds), each style a lookup table; exact: the trained model at every sample."""

    def __call__(self) -> int:
        _check(self.orbit >= 0, "--orbit", "must not be negative")
        _check(self.frames >= 1, "--frames", "must be at least 1")
        _check(self.fps is None or self.fps > 0, "--fps", "must be positive")
        _check(not (self.camera_path and self.path), "--path", "cannot go with --camera-path: give one of the two")
        _check(
            not ((self.camera_path or self.path) and self.orbit), "--orbit", "goes with a split's views, not with --camera-path or --path"
        )
        background = _background(self.background)
        from fastjoint.camera_path import load_camera_path
        from fastjoint.renders import parse_size

        size = None if self.size is None else parse_size(self.size)
        camera_path = None if self.camera_path is None else load_camera_path(self.camera_path)  # a bad file is said first
        from fastjoint.run import load_run, use_renderer

        run = load_run(self.run, self.device)
        pairing = run.pairings.parse(self.pairing or run.pairings.transfers[0].name)  # a wrong name is said before baking
        use_renderer(run, self.renderer)
        if camera_path is None and self.path is None:
            _render(run, pairing.name, self.split, self.orbit, self.video, background, size, self.fps)
            return 0
        _render_path(
            run, pairing, camera_path, self.camera_path.stem if camera_path else self.path, self.frames, self.fps, size, background
        )
        return 0


@dataclass(frozen=True)
class Analyze:
    """Draw the style decoders over the 2-D feature plane, scatter each scene's surface features on it,
    fit the KL divergence between the scenes' features, and mark the target's pixels whose features
    the reference does not cover: RUN/analysis/, RUN/analysis.json."""

    run: RunFolder
    device: Device = None
    """Where to render; None: the run's own device."""

    def __call__(self) -> int:
        from fastjoint.analyze import analyze
        from fastjoint.log import console
        from fastjoint.run import load_run

        run = load_run(self.run, self.device)
        with console.status("[bold]Sampling the feature space..."):
            result = analyze(run.run_dir, run=run)
        print("surface points: " + ", ".join(f"{scene} {n}" for scene, n in result.points.items()))
        if result.kl_target_reference is not None:
            print(
                f"KL(target || reference) = {result.kl_target_reference:.3f}, "
                f"KL(reference || target) = {result.kl_reference_target:.3f} nats"
            )
        if result.coverage is not None:
            share = result.coverage
            print(
                f"uncovered: {share.share:.1%} of the target's visible surface ({share.visible} pixels of {share.views} {share.split} views)"
            )
        pictures = "decoders.png, features.png" + (", coverage.png" if result.coverage is not None else "")
        print(f"wrote {run.run_dir / 'analysis'}/{pictures} and {run.run_dir / 'analysis.json'}")
        return 0


@dataclass(frozen=True)
class Restyle:
    """Add a style to a trained run: a new decoder trained in seconds on the reference's photos in
    that style, against the run's frozen encoders; then score and render the transfer target:STYLE.

    The decoder is written to RUN/styles/STYLE.pt (the checkpoint is untouched); eval, render,
    analyze and view see it as one of the run's styles. Delete the file to remove the style.
    """

    run: RunFolder
    style: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="STYLE", help="the new style's name")]
    path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="PATH", help="the reference's dataset in that style (Blender format)")]
    target_truth: Optional[str] = None
    """The target's dataset in that style (ground truth, for scoring the transfer only)."""
    force: bool = False
    """Replace a style of the same name (a stored one, or shadow one of the config)."""
    steps: int = 200
    """Optimisation steps of the decoder."""
    rays: int = 65536
    """Reference training pixels whose samples are cached (all of them if fewer)."""
    batch: int = 2048
    """Rays per step."""
    lr: float = 1e-2
    """Learning rate of Adam."""
    analogy_steps: Optional[int] = None
    """Steps of the analogy fit of the new decoder (as train fits its styles'); None: the run's train.analogy_steps; 0: off."""
    render: bool = True
    """Render the transfer's test views to RUN/renders/target_STYLE/."""
    device: Device = None
    """Where to train; None: the run's own device."""

    def __call__(self) -> int:
        for key, value in (("--steps", self.steps), ("--rays", self.rays), ("--batch", self.batch)):
            _check(value >= 1, key, "must be at least 1")
        _check(self.lr > 0, "--lr", "must be positive")
        _check(self.analogy_steps is None or self.analogy_steps >= 0, "--analogy-steps", "must not be negative (0: off)")
        from fastjoint.log import progress_bar
        from fastjoint.restyle import RestyleSettings, restyle

        settings = RestyleSettings(steps=self.steps, rays=self.rays, batch=self.batch, lr=self.lr, analogy_steps=self.analogy_steps)
        with progress_bar(f"restyle {self.style}") as bar:

            def progress(phase: str, done: int, total: int) -> None:
                named = {"analogy": ": the analogy fit", "eval": ": scoring the transfer"}.get(phase, "")
                bar(done, total if phase in ("train", "analogy") else None, f"restyle {self.style}{named}")

            result = restyle(self.run, self.style, self.path, self.target_truth, self.force, settings, self.device, progress)
        fitted = result.style.info["analogy_steps"]
        analogy = f" and fitted to the analogy ({fitted} steps)" if fitted else ""
        print(
            f"style {self.style}: {result.cached_rays} rays ({result.cached_samples} samples) cached in "
            f"{result.cache_seconds:.1f} s, decoder trained{analogy} in {result.train_seconds:.1f} s "
            f"(PSNR {result.train_psnr:.2f} dB on the reference); wrote {result.path}"
        )
        if result.transfer is not None:
            t = result.transfer
            print(
                f"transfer target:{self.style}: PSNR {t.psnr:.2f} dB, SSIM {t.ssim:.4f} against {self.target_truth} "
                f"(no-transfer baseline {t.baseline_psnr:.2f} dB, gain {t.gain_db:+.2f} dB)"
            )
        if self.render:
            _render(result.run, f"target:{self.style}", "test", 0, False)
        return 0


@dataclass(frozen=True)
class View:
    """Open a trained run in the browser: the target (or the reference) from any camera, its styles
    swapped instantly or compared side by side, the feature plane with each decoder's colour map,
    painting on it, and recolouring a material by clicking it.

    Needs viser (pip install -e ".[viewer]"). Serves on 127.0.0.1 only unless --host says otherwise;
    served beyond this machine it is read-only unless --allow-writes. Ctrl-C stops it.
    """

    run: RunFolder
    port: int = 8080
    """Port to serve on (viser takes the next free one if it is taken)."""
    host: str = "127.0.0.1"
    """Address to serve on; 0.0.0.0 serves every network the machine is on (read-only unless --allow-writes)."""
    allow_writes: bool = False
    """Let a viewer served beyond this machine (--host not a loopback address) save styles and camera paths into the run."""
    moving_size: int = 256
    """Image height in pixels while the camera moves."""
    resting_size: int = 512
    """Image height once the camera rests."""
    device: Device = None
    """Where to render; None: the run's own device."""
    renderer: Literal["fast", "exact"] = "fast"
    """fast: the scenes baked once at start (a few seconds), each style a lookup table; exact: the trained model at every sample."""

    def __call__(self) -> int:
        _check(0 < self.port < 65536, "--port", "must be between 1 and 65535")
        _check(self.moving_size >= 8, "--moving-size", "must be at least 8 pixels")
        _check(self.resting_size >= self.moving_size, "--resting-size", "must be at least --moving-size")
        from fastjoint.viewer.app import ViewSettings, import_viser, serve

        import_viser()  # before loading the run: a missing viser is said at once
        settings = ViewSettings(
            host=self.host, port=self.port, moving=self.moving_size, resting=self.resting_size, allow_writes=self.allow_writes
        )
        return serve(self.run, settings, self.device, self.renderer)


@dataclass(frozen=True)
class Export:
    """Write a scene in a style as files other tools open: RUN/exports/<scene>_<style>/mesh.ply and
    mesh.glb (marching cubes on the density, each vertex coloured by the style's decoder) and
    points.ply (surface points seen from the training views, coloured as rendered).

    Coordinates are the run's scene frame (z up; the GLB's node turns it y-up, as glTF wants).
    PLY colours are as rendered (sRGB); the GLB's are linear, as glTF requires.
    """

    run: RunFolder
    style: str
    """The style to colour the scene in (original, or one of the run's styles)."""
    scene: Literal["target", "reference"] = "target"
    """The scene to export."""
    resolution: int = 256
    """Density samples per axis of the scene box (data.aabb) for marching cubes; the mesh's detail grows with it, its time with its cube."""
    threshold: Optional[float] = None
    """The density (sigma) where the mesh's surface lies; None: the median density at the point
    cloud's points, where the renders put the surface (printed)."""
    points: int = 100_000
    """At most this many points in the point cloud."""
    out: Optional[str] = None
    """Folder for the three files; None: RUN/exports/<scene>_<style>."""
    device: Device = None
    """Where to evaluate the model; None: the run's own device."""

    def __call__(self) -> int:
        _check(16 <= self.resolution <= 1024, "--resolution", f"must be between 16 and 1024, got {self.resolution}")
        _check(
            self.threshold is None or 0 < self.threshold < float("inf"), "--threshold", f"must be a positive density, got {self.threshold}"
        )
        _check(self.points >= 1, "--points", f"must be at least 1, got {self.points}")
        from fastjoint.export import export_folder, export_pairing
        from fastjoint.log import progress_bar
        from fastjoint.pairing import Pairing
        from fastjoint.run import load_run

        run = load_run(self.run, self.device)
        if self.style not in run.pairings.styles:
            raise UserError(f"--style: unknown style '{self.style}' (this run has {', '.join(run.pairings.styles)})")
        pairing = Pairing(self.scene, self.style)
        folder = Path(self.out) if self.out is not None else export_folder(run, pairing)
        phases = {"points": "surface points", "density": f"density on {self.resolution}^3 points", "colours": "vertex colours"}
        with progress_bar(f"export {pairing.name}") as bar:
            result = export_pairing(
                run,
                pairing,
                self.resolution,
                self.threshold,
                self.points,
                folder,
                lambda phase, done, total: bar(done, total, phases[phase]),
            )
        how = "the median density at the surface points; --threshold sets it" if result.threshold_chosen else "--threshold"
        print(f"mesh of {pairing.name}: resolution {result.resolution} (--resolution), threshold {result.threshold:.3g} ({how})")
        print(f"{result.vertices} vertices, {result.faces} faces; {result.points} points; {result.seconds:.1f} s")
        files = result.files
        print(f"wrote {files.mesh_ply}, {files.mesh_glb.name} and {files.points_ply.name}")
        return 0


@dataclass(frozen=True)
class Process:
    """Turn a folder of photos, or a video, into a dataset fastjoint reads: OUT/images/ and
    OUT/sparse/0/ with poses from COLMAP (through pycolmap), ready for data.target or data.reference."""

    input: Annotated[
        str, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT", help="a folder of photos (.png, .jpg) or a video (.mp4, .mov, ...)")
    ]
    out: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUT", help="the dataset folder to write; it must not exist")]
    frames: int = 150
    """From a video: this many frames, the sharpest of each of as many equal stretches."""
    camera_model: Literal["SIMPLE_RADIAL", "OPENCV", "PINHOLE"] = "SIMPLE_RADIAL"
    """COLMAP's camera model, one camera for every image: SIMPLE_RADIAL (COLMAP's default: one focal length
    and one distortion term), OPENCV (two focal lengths, four distortion terms: wide or strongly distorted lenses)."""

    def __call__(self) -> int:
        _check(self.frames >= 2, "--frames", f"must be at least 2, got {self.frames}")
        from fastjoint.log import progress_bar
        from fastjoint.process import process

        with progress_bar(f"process {self.input}") as bar:
            done = process(Path(self.input), Path(self.out), self.frames, self.camera_model, bar)
        lowered = "" if done.peak_threshold is None else f" (few SIFT features: extracted at peak threshold {done.peak_threshold})"
        print(f"{done.registered} of {done.images} images registered, {done.points} 3-D points{lowered}: {done.folder}")
        print(f'use it as a scene: data.target = "{done.folder}" (or data.reference), then fastjoint train')
        return 0


@dataclass(frozen=True)
class AlignPoses:
    """Align every photo of a trained run's capture to its scene, the scene fixed (a rotation and shift per
    photo, as eval --align-poses does for the test views), and write the capture again to OUT with those
    poses. Train on OUT afresh: a scene trained on COLMAP's poses bends to the photos that disagree; held
    fixed, it still turns them toward the truth, and a second training gains what the bend cost."""

    run: RunFolder
    out: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUT", help="the dataset folder to write; it must not exist")]
    scene: Literal["target", "reference"] = "target"
    """Whose capture (a nerfstudio or COLMAP dataset, its original style)."""
    device: Device = None
    """Where to render; None: the run's own device."""

    def __call__(self) -> int:
        from fastjoint.align import align_capture
        from fastjoint.log import progress_bar

        run = _load(self.run, self.device, "exact")
        with progress_bar(f"aligning the {self.scene}'s photos") as progress:
            done = align_capture(run, self.scene, Path(self.out), progress)
        turned = done.rotation_deg
        print(
            f"{len(turned)} photos aligned: corrections of {turned.median().item():.3f} degrees median, "
            f"{turned.max().item():.3f} largest: {done.folder}"
        )
        print(f'train on it afresh: data.{self.scene} = "{done.folder}"')
        return 0


@dataclass(frozen=True)
class Sweep:
    """Run a grid of runs (a sweep file: base configs x datasets x config values x seeds) as tasks on
    Ray, each an ordinary run folder under the sweep's folder; then write summary.json and
    summary.md (each eval.json figure as mean, lowest and highest over the seeds).

    Started again, a sweep skips the finished runs, resumes the interrupted ones and reports the
    failed ones (--retry-failed runs them again). Needs Ray: pip install -e ".[sweep]". Exit
    status 0 when every run is done, 1 when some failed (each named with its error).
    """

    sweep_file: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SWEEP", help="the sweep file (TOML)")]
    summary: bool = False
    """Only write summary.json and summary.md from the finished runs; start nothing."""
    address: Optional[str] = None
    """A running Ray cluster to join (e.g. auto, or ray://HEAD:10001); None: a local cluster sized to this machine."""
    cpus_per_run: float = 1.0
    """CPUs each run takes (Ray's num_cpus; its torch threads too)."""
    gpus_per_run: float = 0.0
    """GPUs each run takes (Ray's num_gpus)."""
    retry_failed: bool = False
    """Run the failed runs again."""

    def __call__(self) -> int:
        _check(self.cpus_per_run > 0, "--cpus-per-run", "must be positive")
        _check(self.gpus_per_run >= 0, "--gpus-per-run", "must not be negative")
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from fastjoint.log import console
        from fastjoint.sweep import SweepSettings, sweep

        settings = SweepSettings(self.address, self.cpus_per_run, self.gpus_per_run, self.retry_failed, self.summary)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[counts]}"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("sweep", total=None, counts="starting Ray")

            def progress(counts: dict[str, int]) -> None:
                line = f"{counts['done']} done, {counts['running']} running, {counts['pending']} waiting, {counts['failed']} failed"
                bar.update(task, total=counts["total"], completed=counts["done"] + counts["failed"], counts=line)

            result = sweep(self.sweep_file, settings, progress)
        summary = result.summary
        print(f"sweep {result.folder}: {summary['done']} of {summary['runs']} runs done, {summary['failed']} failed")
        for name, error in result.errors.items():
            print(f"failed: {name}: {error}")
        print(f"wrote {result.folder / 'summary.json'} and summary.md")
        return 1 if result.errors else 0


@dataclass(frozen=True)
class ScenesList:
    """List the scene kit's recipes, their scenes and styles."""

    def __call__(self) -> int:
        from fastjoint.scenes import list_recipes, load_recipe

        for path in list_recipes():
            recipe = load_recipe(path)
            views = recipe.views
            print(f"{recipe.name}: {recipe.description}")
            print(f"  file: {path}")
            print(f"  scenes: {', '.join(recipe.scenes)}; styles: {', '.join(recipe.styles)}")
            print(f"  {recipe.camera.size}px, {views.train}/{views.val}/{views.test} train/val/test views")
        return 0


@dataclass(frozen=True)
class ScenesMake:
    """Write a recipe's datasets: every scene in every style, ground truth included."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME", help="recipe name (data/NAME.toml) or a .toml path")]
    size: Optional[int] = None
    """Image size in pixels; None: the recipe's."""
    force: bool = False
    """Write again even when the output is current."""
    out: str = "data/generated"
    """Folder for the datasets."""
    format: FormatName = DEFAULT_FORMAT
    """Dataset format to write (every format fastjoint reads; see fastjoint/data/formats.py)."""

    def __call__(self) -> int:
        _check(self.size is None or self.size >= 8, "--size", "must be at least 8 pixels")
        from fastjoint.log import progress_bar
        from fastjoint.scenes import make_datasets

        with progress_bar(f"scenes {self.name}") as progress:
            folder = make_datasets(self.name, root=self.out, size=self.size, force=self.force, format=self.format, progress=progress)
        print(f"datasets of '{self.name}' in {folder}")
        return 0


@dataclass(frozen=True)
class Scenes:
    """The procedural scene kit: recipes in data/, datasets in data/generated/."""

    action: Union[
        Annotated[ScenesList, tyro.conf.subcommand("list")],
        Annotated[ScenesMake, tyro.conf.subcommand("make")],
    ]

    def __call__(self) -> int:
        return self.action()


def _commands(train_default: Train | None) -> type:
    """The verbs; `train` takes its defaults from the config file when it is the verb used."""
    train = tyro.conf.subcommand("train", default=train_default) if train_default else tyro.conf.subcommand("train")
    return Union[  # type: ignore[return-value]
        Annotated[Train, train],
        Annotated[Eval, tyro.conf.subcommand("eval")],
        Annotated[Render, tyro.conf.subcommand("render")],
        Annotated[Analyze, tyro.conf.subcommand("analyze")],
        Annotated[Restyle, tyro.conf.subcommand("restyle")],
        Annotated[View, tyro.conf.subcommand("view")],
        Annotated[Export, tyro.conf.subcommand("export")],
        Annotated[Process, tyro.conf.subcommand("process")],
        Annotated[AlignPoses, tyro.conf.subcommand("align-poses")],
        Annotated[Sweep, tyro.conf.subcommand("sweep")],
        Annotated[Scenes, tyro.conf.subcommand("scenes")],
    ]


def main(argv: list[str] | None = None) -> int:
    """Runs the command of `argv` (default: sys.argv); returns the exit status.

    0: done; 2: a user mistake or a fault of the machine (one `error:` line); 130 or 143:
    stopped by Ctrl-C or SIGTERM (one line). Anything else is a bug and keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_interrupted)  # a polite kill stops as Ctrl-C does
    try:
        if argv == ["--version"]:
            print(f"fastjoint {__version__}")
            return 0
        command = _parse(argv)
        return command()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        line = environment_error(error)
        if line is None:
            raise  # not the machine's fault: a bug, with its traceback
        print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        stopped = Interrupted.of(stop)
        print(stopped.message or stopped.how.split(" (")[0], file=sys.stderr)
        return stopped.exit_status


def environment_error(error: OSError) -> str | None:
    """One line for an OSError the machine caused (full disk, read-only, no permission), naming the path.

    Returns None for any other OSError: those are fastjoint's bugs and keep their traceback.
    """
    if error.errno not in ENVIRONMENT_ERRNOS:
        return None
    what = (error.strerror or os.strerror(error.errno)).lower()
    hints = {
        "no space left on device": "; free some space (files already written are intact)",
        "permission denied": "; check the folder's permissions",
    }
    where = f"{error.filename}: " if error.filename is not None else ""
    return f"{where}{what}{hints.get(what, '')}"


def _parse(argv: list[str]):
    """The command of `argv`. The CONFIG of `train` is the only thing read before tyro."""
    if not argv:  # the overview, as a mistake
        with contextlib.suppress(SystemExit):
            _tyro(_commands(None), ["--help"])
        return lambda: 2
    train_default = None
    if argv[0] == "train":
        path = _default_config()
        if len(argv) > 1 and not argv[1].startswith("-"):
            path, argv = Path(argv[1]), argv[:1] + argv[2:]
        train_default = Train(config=load_config(path))
        for arg in argv[1:]:
            key = arg.split("=")[0].removeprefix("--").replace("-", "_")
            if key in RETIRED_OPTIONS:
                raise UserError(retired_message(key))
    helping = any(a in ("-h", "--help") for a in argv)
    if helping:
        return lambda: _tyro(_commands(train_default), argv)
    # tyro draws its refusals as a framed box; capture it and say it in one line.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured), _wide():
            return _tyro(_commands(train_default), argv)
    except SystemExit:
        raise UserError(_one_line(captured.getvalue())) from None


def _tyro(commands: type, argv: list[str]):
    return tyro.cli(
        commands,
        args=argv,
        prog="fastjoint",
        description=f"fastjoint {__version__}: restyle a 3D scene by analogy.",
        config=(tyro.conf.OmitSubcommandPrefixes,),
    )


@contextlib.contextmanager
def _wide():
    """A wide virtual terminal while tyro formats an error, so its lines are not wrapped."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "10000"
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _one_line(boxed: str) -> str:
    """tyro's framed error as one line: its message, and its first suggestion.

    The frame is drawn in box characters, or, where the output is not a terminal, as a
    title line and rules.
    """
    sections: list[list[str]] = [[]]
    for raw in boxed.splitlines():
        line = raw.strip().strip("│|╭╮╰╯+").strip()
        if re.fullmatch(r"[─-]+", line):  # a rule between sections
            sections.append([])
        elif line and not re.fullmatch(r"[─-] .* [─-]+", line):  # not the title in the frame's top
            sections[-1].append(line)
    if len(sections) > 1 and len(sections[0]) == 1 and sections[1]:
        sections = sections[1:]  # without a frame, the title stands on a line of its own
    message = " ".join(sections[0]) or "cannot parse the command line (see fastjoint --help)"
    for section in sections[1:]:
        if section and section[0].startswith("Perhaps you meant") and len(section) > 1:
            message += f" (did you mean {section[1].split()[0]}?)"
        elif section and section[0].startswith("Available subcommands"):
            message += f"; {section[0][0].lower()}{section[0][1:]}"
    return message


def _default_config() -> Path:
    """configs/demo.toml of the working folder, else that of the fastjoint checkout."""
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    checkout = Path(__file__).resolve().parents[1] / DEFAULT_CONFIG
    return checkout if checkout.is_file() else DEFAULT_CONFIG


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise UserError(f"{key}: {problem}")


def _background(text: str | None):
    """`--background` as a colour tensor [3], or None."""
    if text is None:
        return None
    import torch

    from fastjoint.colours import parse_colour

    return torch.tensor(parse_colour(text, "--background"))


def _load(run_dir, device, renderer: str):
    """A trained run, rendering with `renderer` (the bake behind a progress bar)."""
    from fastjoint.run import load_run, use_renderer

    run = load_run(run_dir, device)
    use_renderer(run, renderer)
    return run


def _evaluate(run, background=None, align_poses: bool = False) -> None:
    from fastjoint.evaluate import evaluate, print_table

    print_table(evaluate(run.run_dir, run=run, background=background, align_poses=align_poses))


def _render(run, pairing_name: str, split: str, orbit: int, video: bool, background=None, size=None, fps=None) -> None:
    from fastjoint.log import progress_bar
    from fastjoint.renders import VIDEO_FPS, render_pairing

    pairing = run.pairings.parse(pairing_name)
    with progress_bar(f"render {pairing.name}") as progress:
        outputs = render_pairing(run, pairing, split, orbit, video, progress, background, size, fps or VIDEO_FPS)
    _rendered(outputs, pairing)


def _render_path(run, pairing, camera_path, name: str, frames: int, fps, size, background) -> None:
    """Renders a camera-path file's frames, or (camera_path None) a `name` path of `frames` frames from the training cameras."""
    import dataclasses

    from fastjoint.log import progress_bar
    from fastjoint.renders import dataset_path, render_path

    if camera_path is None:
        camera_path = dataset_path(run, pairing, name, frames, size)
    elif size is not None:
        camera_path = camera_path.resized(size)
    if fps is not None:
        camera_path = dataclasses.replace(camera_path, fps=fps)
    label = f"render {pairing.name} along {name} ({len(camera_path)} frames, {camera_path.width}x{camera_path.height})"
    with progress_bar(label) as progress:
        outputs = render_path(run, pairing, camera_path, name, progress=progress, background=background)
    _rendered(outputs, pairing)


def _rendered(outputs, pairing) -> None:
    print(f"rendered {len(outputs.images)} images of {pairing.name} to {outputs.folder}")
    if outputs.video:
        print(f"video: {outputs.video}")


if __name__ == "__main__":
    raise SystemExit(main())
