"""Held-out views aligned to their photos before they are scored (`fastjoint eval --align-poses`).

A capture's test poses come from the same estimate as its training poses (COLMAP), so each is
off by a fraction of a degree: a pixel or more, which costs a held-out view decibels however
good the scene is. As methods that refine poses are scored (BARF, NeRF--), each held-out
view's pose is first corrected against its own photo with the scene held fixed: a rotation
about the camera's centre and a shift (fastjoint.model.poses), fitted by ALIGN_STEPS damped
Gauss-Newton steps (Levenberg-Marquardt) of ALIGN_RAYS random pixels each. The trained model
does not change.

Gauss-Newton, not a first-order optimiser: for a camera a few units from what it looks at,
turning it about its centre moves the whole picture, while circling the object by the same
angle (a turn and a shift together) only changes the parallax within it, 3,000 times more
weakly per pixel. Adam's steps follow that weak direction slowly: 300 of them left a kit
camera COLMAP had placed 2.1 degrees off at 1.6 degrees even against a scene trained on the
true poses, where Gauss-Newton's 100 steps reach 0.5 to 0.7.

How far the photo pins the weak direction depends on how many pixels it has, so each step is
that of a prior too (a maximum a posteriori fit): the squared colour error summed over the
photo's pixels (the rays drawn stand for all of them), plus ALIGN_PRIOR times the correction's
squared size (radians, world units). A 384 px photo outweighs the prior along even its weakest
direction 20 times over and goes where its pixels say; a 24 px one does not (along that
direction it moves its picture by under a tenth of a pixel per degree), and stays near where it was
given instead of wandering 2 degrees to where the scene's own errors fit it best.

Each step sees a few hundred of a photo's pixels, which along the weak directions leaves its
solution a few tenths of a degree of noise: the iterates of the second half are averaged. Last,
a view's correction is undone where it does not lower the error on CHECK_RAYS fresh pixels of
its photo: on the kit, a photo COLMAP had placed well was otherwise turned 0.7 to 1.2 degrees away, into a
pose its own photo fits worse (benchmarks/README.md, "Gauss-Newton with a prior").

`align_capture` (`fastjoint align-poses`) does the same for every photo of a scene's capture
(nerfstudio or COLMAP), training views included, and writes the capture again with the corrected
poses, to train on afresh. Training on poses that COLMAP left off lets the scene bend to the
photos that disagree; a scene so trained, held fixed, still turns most of those photos toward
their true poses, and a second training on them gains what the bend cost (benchmarks/README,
"Second-phase pose refinement").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from fastjoint.data import SPLITS, Split
from fastjoint.data.cameras import Camera, pixel_rays
from fastjoint.data.colmap import from_pose, model_folder, read_model, write_model
from fastjoint.data.formats import detect_format
from fastjoint.data.nerfstudio import TRANSFORMS
from fastjoint.data.recentre import apply_transform
from fastjoint.data.split import to_float
from fastjoint.datasets import load_scene_split
from fastjoint.errors import UserError
from fastjoint.model.poses import PoseCorrection, corrected
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.run import Built, LoadedRun

ALIGN_STEPS = 100  # per view
ALIGN_RAYS = 2048
ALIGN_DAMPING = 0.1  # Levenberg-Marquardt's, relative to the normal matrix's diagonal
ALIGN_PRIOR = 300.0  # the weight of a correction's squared size against the photo's summed squared error
CHECK_RAYS = 8192  # per view: a correction is kept only if it lowers the error on these
JOINT_STEPS = 100  # align-poses: every photo of a capture at once
JOINT_RAYS = 32768


class Aligned(NamedTuple):
    poses: Tensor  # [n, 4, 4] the views' poses, corrected
    rotation_deg: Tensor  # [n] each correction's angle
    shift: Tensor  # [n] each correction's shift, world units

    def to_json(self) -> dict:
        return {"rotation_deg": [round(v, 4) for v in self.rotation_deg.tolist()], "shift": [round(v, 6) for v in self.shift.tolist()]}


def align_views(
    run: LoadedRun,
    pairing: Pairing,
    split: Split,
    background: Tensor | None = None,  # [3]: render and compose on this colour; None: the pairing's backdrop
    progress: Callable[[int, int], None] | None = None,  # (views done, views); jointly: (steps done, steps)
    jointly: bool = False,
) -> Aligned:
    """Each of `split`'s views with its pose corrected against its photo, the run's scene fixed: one view after
    another (ALIGN_STEPS steps of ALIGN_RAYS rays each), or `jointly`, every view in each of JOINT_STEPS steps
    of JOINT_RAYS rays drawn from all of them (a capture's hundred photos in the time of a few views); then
    each correction is kept only where it lowers the error on fresh pixels of its photo."""
    built, device = run.built, run.built.device
    poses = split.poses.to(device)
    correction = PoseCorrection(len(split), device)
    generator = torch.Generator().manual_seed(0)
    built.train(False)
    frozen = [p for p in (*built.model.parameters(), *built.environments.parameters()) if p.requires_grad]
    try:
        for p in frozen:  # the scene is fixed: no gradient of the tables and networks is computed
            p.requires_grad_(False)
        fit = functools.partial(_fit, built, pairing, split, poses, correction, generator, background)
        if jointly:
            fit(None, JOINT_STEPS, JOINT_RAYS, progress)
        else:
            for view in range(len(split)):
                fit(view, ALIGN_STEPS, ALIGN_RAYS)
                if progress is not None:
                    progress(view + 1, len(split))
        with torch.no_grad():
            _keep_improvements(built, pairing, split, poses, correction, generator, background)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        corrected = correction(poses, torch.arange(len(split), device=device)).cpu()
    return Aligned(corrected, *correction.sizes())


def _fit(
    built: Built,
    pairing: Pairing,
    split: Split,
    poses: Tensor,
    correction: PoseCorrection,
    generator: torch.Generator,
    background: Tensor | None,
    view: int | None,  # None: rays from every view
    steps: int,
    rays: int,
    progress: Callable[[int, int], None] | None = None,  # (steps done, steps)
) -> None:
    """`steps` damped Gauss-Newton steps on the corrections (each view's own 6 x 6 system), each from
    `rays` random pixels.

    Each ray gets its own copy of its view's six numbers, so three backward passes (one per colour
    channel) give every ray's Jacobian. Summed per view and scaled to the photo's pixel count, they
    make the view's normal matrix; ALIGN_PRIOR adds to it and pulls toward no correction, and
    ALIGN_DAMPING times its diagonal damps the step (Levenberg-Marquardt's scaling). The corrections
    end as the mean of the second half's iterates."""
    device = poses.device
    total = torch.zeros_like(correction.corrections)
    for step in range(steps):
        views, row, col = _draw(split, view, rays, generator)
        index = views.to(device)
        each = correction.corrections.detach()[index].requires_grad_(True)  # [rays, 6]
        rgb, target = _render_and_photo(built, pairing, split, poses, views, row, col, each, background)
        jacobian = torch.stack([torch.autograd.grad(rgb[:, c].sum(), each, retain_graph=c < 2)[0] for c in range(3)], dim=1)
        residual = rgb.detach() - target  # [rays, 3]
        count = torch.bincount(index, minlength=len(split)).float()
        scale = split.camera.height * split.camera.width / count.clamp(min=1)  # [n] each view's rays stand for all its pixels
        normal = torch.zeros(len(split), 6, 6, device=device).index_add_(0, index, torch.einsum("rci,rcj->rij", jacobian, jacobian))
        gradient = torch.zeros(len(split), 6, device=device).index_add_(0, index, torch.einsum("rci,rc->ri", jacobian, residual))
        normal = scale[:, None, None] * normal + ALIGN_PRIOR * torch.eye(6, device=device)
        gradient = scale[:, None] * gradient + ALIGN_PRIOR * correction.corrections.detach()
        damped = normal + torch.diag_embed(ALIGN_DAMPING * normal.diagonal(dim1=1, dim2=2))
        with torch.no_grad():  # a view no ray came from this step keeps its correction
            step_of = torch.linalg.solve(damped.double(), gradient.double()[..., None])[..., 0].float()
            correction.corrections -= torch.where(count[:, None] > 0, step_of, torch.zeros_like(step_of))
            if step >= steps // 2:  # the iterates of the second half averaged
                total += correction.corrections
        if progress is not None:
            progress(step + 1, steps)
    with torch.no_grad():
        correction.corrections.copy_(total / (steps - steps // 2))


def _draw(split: Split, view: int | None, rays: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """`rays` random pixels of the view `view` (None: of random views): their views, rows and columns, [rays] each."""
    views = torch.full((rays,), view) if view is not None else torch.randint(len(split), (rays,), generator=generator)
    row = torch.randint(split.camera.height, (rays,), generator=generator)
    col = torch.randint(split.camera.width, (rays,), generator=generator)
    return views, row, col


def _render_and_photo(
    built: Built,
    pairing: Pairing,
    split: Split,
    poses: Tensor,  # [n, 4, 4] the views' poses as given
    views: Tensor,
    row: Tensor,
    col: Tensor,
    change: Tensor,  # [rays, 6] each ray's correction of its view's pose
    background: Tensor | None,
) -> tuple[Tensor, Tensor]:  # [rays, 3] rendered, [rays, 3] the photos' pixels
    """The pixels rendered from the corrected poses, and the photos' own, both over the same background
    (the pairing's backdrop, or `background`)."""
    device = poses.device
    index = views.to(device)
    rays_o, rays_d = pixel_rays(corrected(poses[index], change), col.to(device) + 0.5, row.to(device) + 0.5, split.camera)
    behind = (built.backdrop(pairing, rays_d) if background is None else background.to(device)).detach()
    rgba = to_float(split.pixels[views, row, col]).to(device)  # composited on `behind` where transparent
    return built.render_rays(pairing, rays_o, rays_d, behind).rgb, rgba[:, :3] * rgba[:, 3:] + behind * (1.0 - rgba[:, 3:])


def _keep_improvements(
    built: Built,
    pairing: Pairing,
    split: Split,
    poses: Tensor,
    correction: PoseCorrection,
    generator: torch.Generator,
    background: Tensor | None,
) -> None:
    """Each view's correction undone where it does not lower the colour error on CHECK_RAYS fresh random
    pixels of its photo (the same pixels rendered from the pose as given and as corrected)."""
    for view in range(len(split)):
        views, row, col = _draw(split, view, CHECK_RAYS, generator)
        errors = []
        for change in (torch.zeros(CHECK_RAYS, 6, device=poses.device), correction.corrections[views.to(poses.device)]):
            rgb, photo = _render_and_photo(built, pairing, split, poses, views, row, col, change, background)
            errors.append(float((rgb - photo).square().mean()))
        if errors[1] >= errors[0]:
            correction.corrections[view] = 0.0


CAPTURES = ("nerfstudio", "colmap")  # the formats whose poses are estimated, and so can be aligned


class CaptureAligned(NamedTuple):
    folder: Path  # the capture written again, with the corrected poses
    rotation_deg: Tensor  # [n] each photo's correction


def align_capture(
    run: LoadedRun,
    scene: str,
    out: Path,
    progress: Callable[[int, int], None] | None = None,  # (steps done, steps)
) -> CaptureAligned:
    """Every photo of `scene`'s original capture aligned to the run's scene (as `align_views`), and the
    capture copied to `out` with those poses: the same files, its poses file rewritten. `out` must not
    exist; it is written beside as OUT.partial and renamed when done."""
    pairing = Pairing(scene, ORIGINAL)
    source = Path(run.config.data.dataset(pairing))
    kind = detect_format(source)
    if kind not in CAPTURES:
        raise UserError(f"{source}: a {kind} dataset has exact poses; align-poses corrects captures ({', '.join(CAPTURES)})")
    if out.exists():
        raise UserError(f"{out}: already exists (choose a new folder; nothing is overwritten)")
    views: dict[Camera, Split] = {}  # every photo once, grouped by camera (a capture has one)
    seen: set[str] = set()
    for name in SPLITS:  # val and test are one list unless the capture's split lists say otherwise
        split = load_scene_split(run.config.data, scene, source, name)
        keep = [k for k, view in enumerate(split.names) if view not in seen]
        seen.update(split.names)
        if keep:
            part = dataclasses.replace(split, pixels=split.pixels[keep], poses=split.poses[keep], names=tuple(split.names[k] for k in keep))
            group = views.get(split.camera)
            views[split.camera] = part if group is None else _joined(group, part)
    poses, rotations = {}, []
    for k, group in enumerate(views.values()):

        def step(done: int, steps: int, k: int = k) -> None:
            if progress is not None:
                progress(k * steps + done, len(views) * steps)

        aligned = align_views(run, pairing, group, None, step, jointly=True)
        # Back into the file's frame: the loader's recentring is a similarity without rotation.
        moved = apply_transform(aligned.poses.double().numpy(), np.linalg.inv(group.transform.numpy()))
        poses.update(zip(group.names, moved, strict=True))
        rotations.append(aligned.rotation_deg)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(source, partial)  # links are followed: the copy stands alone
        (_write_nerfstudio if kind == "nerfstudio" else _write_colmap)(partial, poses)
        partial.replace(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return CaptureAligned(out, torch.cat(rotations))


def _joined(a: Split, b: Split) -> Split:
    """The views of two splits of one dataset with one camera, as one."""
    return dataclasses.replace(
        a,
        pixels=torch.cat([a.pixels, b.pixels]),
        poses=torch.cat([a.poses, b.poses]),
        names=a.names + b.names,
        transparent=a.transparent or b.transparent,
    )


def _write_nerfstudio(folder: Path, poses: dict[str, np.ndarray]) -> None:
    """transforms.json with each aligned frame's transform_matrix replaced (the frames no split names keep theirs)."""
    meta = json.loads((folder / TRANSFORMS).read_text())
    for frame in meta["frames"]:
        pose = poses.get(Path(frame["file_path"]).as_posix())
        if pose is not None:
            frame["transform_matrix"] = pose.tolist()
    (folder / TRANSFORMS).write_text(json.dumps(meta, indent=1))


def _write_colmap(folder: Path, poses: dict[str, np.ndarray]) -> None:
    """The model's images file with each aligned image's extrinsics replaced; the cameras as they were, the 3-D points' positions kept
    (their colours and tracks are not: fastjoint reads only the positions)."""
    model_dir = model_folder(folder)
    model = read_model(model_dir)
    images = []
    for image in model.images:
        pose = poses.get(f"images/{image.name}")
        if pose is not None:
            qvec, tvec = from_pose(pose)
            image = dataclasses.replace(image, qvec=qvec, tvec=tvec)
        images.append(image)
    binary = model.images_file.suffix == ".bin"
    for stale in ("cameras", "images", "points3D"):
        for suffix in (".bin", ".txt"):
            (model_dir / f"{stale}{suffix}").unlink(missing_ok=True)
    write_model(model_dir, list(model.cameras.values()), images, model.points, binary=binary)
