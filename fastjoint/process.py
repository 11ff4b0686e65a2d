"""`fastjoint process INPUT OUT`: a folder of photos, or a video, into a dataset fastjoint reads.

The output is a COLMAP dataset (see `data/colmap.py`): OUT/images/ (the photos, or the
frames chosen from the video) and OUT/sparse/0/ (the cameras and poses), with COLMAP's own
database beside them (OUT/database.db; its log in OUT/colmap.log). Poses come from COLMAP through pycolmap (PyPI's
wheels; no hand-installed binary): SIFT features (with a lower peak threshold when the photos give few: see
`LOW_TEXTURE_FEATURES`), exhaustive matching for photos (sequential
for a video's frames, which follow each other), incremental mapping; one camera shared by every
image, SIMPLE_RADIAL by default (COLMAP's own: one focal length, one radial distortion term),
OPENCV for strongly distorted lenses; the COLMAP loader undistorts it in its rays.

From a video, `frames` frames are kept: the video is cut into that many equal stretches and the
sharpest frame of each (the variance of its Laplacian) is taken; frames with next to no
contrast (a black or uniform frame) are never chosen.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastjoint.errors import UserError
from fastjoint.files import write_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
CAMERA_MODELS = ("SIMPLE_RADIAL", "OPENCV", "PINHOLE")  # of those the COLMAP loader reads
MIN_REGISTERED = 8  # fewer registered images than this cannot train a scene
MIN_SHARE = 0.5  # nor a reconstruction that leaves most of the images out
MIN_CONTRAST = 2.0  # a frame whose grey levels spread less (std, of 255) is not a picture of anything
# When the median photo gives fewer SIFT features than this at COLMAP's peak threshold (1/150),
# they are extracted again at LOW_TEXTURE_PEAK: on the kit's renders (median 204 features) that
# registers 68 of 68 photos instead of 44; the fox (median 7,682) never takes it, where it would
# cost 55% more time for the same poses (benchmarks/README.md, "`fastjoint process` on the kit").
LOW_TEXTURE_FEATURES = 1000
LOW_TEXTURE_PEAK = 0.002

Progress = Callable[..., None]


@dataclass(frozen=True)
class Processed:
    images: int  # images given to COLMAP
    registered: int  # images with a pose in the model kept
    points: int  # 3-D points of that model
    folder: Path
    peak_threshold: float | None = None  # SIFT's peak threshold where lowered for photos with little texture


def sharpness(image: np.ndarray) -> float:
    """The variance of the Laplacian of an image's grey levels (higher: sharper)."""
    grey = image[..., :3].astype(np.float64).mean(-1) if image.ndim == 3 else image.astype(np.float64)
    laplacian = -4.0 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    return float(laplacian.var())


def _frames(video: Path):
    import imageio.v3 as iio

    try:
        yield from iio.imiter(video, plugin="FFMPEG")
    except (OSError, RuntimeError, ValueError, StopIteration) as error:
        raise UserError(
            f"{video}: cannot read it as a video ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None


def choose_frames(video: Path, count: int, progress: Progress | None = None) -> list[int]:
    """The indices of the sharpest usable frame in each of `count` equal stretches of the video (two passes: scores, then frames)."""
    scores = []
    for image in _frames(video):
        usable = float(image[..., :3].std()) >= MIN_CONTRAST
        scores.append(sharpness(image) if usable else -1.0)
        if progress is not None and len(scores) % 10 == 0:
            progress(len(scores), None, f"scoring the frames of {video.name}: {len(scores)}")
    if not any(score >= 0 for score in scores):
        what = "no frames" if not scores else f"{len(scores)} frames, none with any contrast"
        raise UserError(f"{video}: no usable frames ({what})")
    edges = np.linspace(0, len(scores), min(count, len(scores)) + 1).round().astype(int)
    chosen = []
    for start, end in zip(edges[:-1], edges[1:], strict=True):
        best = max(range(start, end), key=lambda i: scores[i], default=None)
        if best is not None and scores[best] >= 0:
            chosen.append(best)
    return chosen


def gather_images(source: Path, images: Path, frames: int, progress: Progress | None = None) -> list[str]:
    """Writes the photos of a folder, or the chosen frames of a video, to `images`; their names."""
    images.mkdir(parents=True)
    if source.is_dir():
        photos = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise UserError(f"{source}: no photos in the folder (expected {', '.join(IMAGE_SUFFIXES)} files)")
        for i, photo in enumerate(photos):
            shutil.copy2(photo, images / photo.name)
            if progress is not None:
                progress(i + 1, len(photos), f"copying {len(photos)} photos")
        return [p.name for p in photos]
    chosen = choose_frames(source, frames, progress)
    wanted = set(chosen)
    names = []
    for index, image in enumerate(_frames(source)):
        if index in wanted:
            name = f"frame_{index:05d}.png"
            write_image(images / name, np.ascontiguousarray(image[..., :3]))
            names.append(name)
            if progress is not None:
                progress(len(names), len(chosen), f"writing {len(chosen)} frames")
    return names


@contextlib.contextmanager
def logged_to(path: Path) -> Iterator[None]:
    """Sends what native code writes to the standard error (COLMAP's step-by-step log) to `path`,
    while Python's sys.stderr (the progress bar, messages) still reaches the terminal."""
    sys.stderr.flush()
    terminal = os.dup(2)
    python_stderr = sys.stderr
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1)
        try:
            yield
        finally:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(terminal, 2)
            os.close(terminal)


def median_features(database: Path) -> float:
    """The median number of SIFT features per image in a COLMAP database."""
    import pycolmap

    db = pycolmap.Database.open(database)
    try:
        return float(np.median([db.num_keypoints_for_image(image.image_id) for image in db.read_all_images()]))
    finally:
        db.close()


def extract(database: Path, images: Path, camera_model: str, peak_threshold: float | None = None) -> None:
    """SIFT features of every image into a new `database` (one camera shared by all)."""
    import pycolmap

    for path in (database, database.with_name(database.name + "-shm"), database.with_name(database.name + "-wal")):
        path.unlink(missing_ok=True)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    if peak_threshold is not None:
        extraction.sift.peak_threshold = peak_threshold
    pycolmap.extract_features(
        database, images, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader, extraction_options=extraction
    )


def reconstruct(
    folder: Path, sequential: bool, camera_model: str = "SIMPLE_RADIAL", progress: Progress | None = None
) -> tuple[int, int, float | None]:
    """COLMAP through pycolmap on folder/images: folder/database.db and the largest model in
    folder/sparse/0; returns (registered images, 3-D points, the peak threshold where lowered)."""
    import pycolmap

    database, images = folder / "database.db", folder / "images"
    if progress is not None:
        progress(0, 3, "COLMAP: features")
    work = folder / "sparse" / "models"
    work.mkdir(parents=True)
    peak = None
    with logged_to(folder / "colmap.log"):
        extract(database, images, camera_model)
        if median_features(database) < LOW_TEXTURE_FEATURES:
            peak = LOW_TEXTURE_PEAK
            if progress is not None:
                progress(0, 3, f"COLMAP: few features, extracting again at peak threshold {peak}")
            extract(database, images, camera_model, peak)
        if progress is not None:
            progress(1, 3, "COLMAP: matching")
        (pycolmap.match_sequential if sequential else pycolmap.match_exhaustive)(database)
        if progress is not None:
            progress(2, 3, "COLMAP: mapping")
        models = pycolmap.incremental_mapping(database, images, work)
    if not models:
        shutil.rmtree(work)
        return 0, 0, peak
    best = max(models.values(), key=lambda m: m.num_reg_images())
    final = folder / "sparse" / "0"
    final.mkdir()
    best.write(final)
    shutil.rmtree(work)
    if progress is not None:
        progress(3, 3, "COLMAP: done")
    return best.num_reg_images(), best.num_points3D(), peak


def process(source: Path, out: Path, frames: int = 150, camera_model: str = "SIMPLE_RADIAL", progress: Progress | None = None) -> Processed:
    """Photos (a folder) or a video (a file) at `source` into a COLMAP dataset at `out`.

    `out` must not exist; it is written beside as OUT.partial and renamed when done, so a
    failed or interrupted run leaves nothing half-made at `out` (run again, it starts over). UserError, one line, when the
    input cannot be read or too few images register.
    """
    source, out = Path(source), Path(out)
    if not source.exists():
        raise UserError(f"{source}: no such folder or video")
    if source.is_file() and source.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"{source}: not a folder of photos or a video ({', '.join(VIDEO_SUFFIXES)})")
    if out.exists():
        raise UserError(f"{out}: already exists (choose a new folder; nothing is overwritten)")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():  # what a killed run left: started again from the beginning
        shutil.rmtree(partial)
    try:
        names = gather_images(source, partial / "images", frames, progress)
        registered, points, peak = reconstruct(partial, source.is_file(), camera_model, progress)
        needed = max(MIN_REGISTERED, int(np.ceil(MIN_SHARE * len(names))))
        if registered < needed:
            raise UserError(
                f"{source}: COLMAP registered {registered} of {len(names)} images (at least {needed} needed): "
                "the views need more overlap, more texture or sharper pictures"
            )
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Processed(len(names), registered, points, out, peak)
