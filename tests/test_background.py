"""Backgrounds per dataset: settings, the learned environment map, training and rendering on them."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from benchmarks.backgrounds import fit_psnr
from conftest import FIXTURES, run_cli, tiny_config, write_config
from fastjoint.colours import LEARNED, RANDOM, parse_background, resolve_background
from fastjoint.config import DataConfig, StyleData, load_config
from fastjoint.errors import UserError
from fastjoint.model.encoding import spherical_harmonics
from fastjoint.render.background import EnvironmentMap, bilinear_wrapped, direction_uv
from fastjoint.scenes import make_datasets


@pytest.mark.slow  # three fits of 400 Adam steps
def test_environment_map_draws_clouds_that_low_order_functions_cannot():
    generator = torch.Generator().manual_seed(0)
    environment = EnvironmentMap()
    learned = fit_psnr(environment, list(environment.parameters()), 400, generator, test_dirs=8192)
    constant = torch.zeros(3, requires_grad=True)
    flat = fit_psnr(lambda d: torch.sigmoid(constant).expand(d.shape[0], 3), [constant], 400, generator, test_dirs=8192)
    weights = torch.zeros(16, 3, requires_grad=True)
    harmonics = fit_psnr(lambda d: torch.sigmoid(spherical_harmonics(d, 4) @ weights), [weights], 400, generator, test_dirs=8192)
    assert learned > flat + 15.0, (learned, flat)
    assert learned > harmonics + 6.0, (learned, harmonics)  # degree-4 SH blur the clouds away
    assert learned > 35.0, learned


def test_bilinear_lookup_wraps_around_the_azimuth():
    generator = torch.Generator().manual_seed(1)
    texture = torch.rand(4, 8, 3, generator=generator)
    # Texel centres give the texels back; halfway across the seam is the mean of the first and last column.
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(8), indexing="ij")
    uv = torch.stack([(cols.flatten() + 0.5) / 8, (rows.flatten() + 0.5) / 4], dim=-1)
    torch.testing.assert_close(bilinear_wrapped(texture, uv), texture.reshape(-1, 3))
    seam = bilinear_wrapped(texture, torch.tensor([[0.0, 0.625], [1.0, 0.625]]))
    torch.testing.assert_close(seam[0], (texture[2, 0] + texture[2, 7]) / 2)
    torch.testing.assert_close(seam[1], seam[0])
    # Directions: +x at u = 0.5, the zenith at v = 0, the horizon at v = 0.5.
    uv = direction_uv(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]))
    torch.testing.assert_close(uv[:, 1], torch.tensor([0.5, 0.0, 0.5]))
    torch.testing.assert_close(uv[[0, 2], 0], torch.tensor([0.5, 0.25]))


def test_settings_and_auto():
    assert parse_background("white", "k") == (1.0, 1.0, 1.0)
    assert parse_background("#ff8000", "k") == (1.0, 128 / 255, 0.0)
    assert parse_background("learned", "k") == LEARNED
    assert resolve_background("auto", "k", transparent=False, random_for_transparent=True, fallback=(1, 1, 1)) == LEARNED
    assert resolve_background("auto", "k", transparent=True, random_for_transparent=True, fallback=(1, 1, 1)) == RANDOM
    assert resolve_background("auto", "k", transparent=True, random_for_transparent=False, fallback=(0.5, 0.5, 0.5)) == (0.5, 0.5, 0.5)
    assert resolve_background("black", "k", transparent=False, random_for_transparent=True, fallback=(1, 1, 1)) == (0.0, 0.0, 0.0)
    data = DataConfig(target="t", reference="r", styles={"s": StyleData("rs", reference_background="#000000")})
    pairings = {p.name: p for p in data.pairings.all}
    assert data.background(pairings["reference:s"]) == "#000000"
    assert data.background_key(pairings["reference:s"]) == "data.styles.s.reference_background"
    assert data.background_key(pairings["target:s"]) == "data.target_background"  # a transfer has the target's


@pytest.mark.parametrize(
    "text, message",
    [
        ('target_background = "sky"', r"data.target_background: expected \"auto\", \"random\", \"learned\""),
        ('reference_background = "#12345"', r"data.reference_background: expected .* got '#12345'"),
        ('[data.styles.blue]\nreference = "rb"\nreference_background = "grey"', r"data.styles.blue.reference_background: expected"),
        ("reference_background = [1, 1, 1]", r"'data.reference_background' must be a string"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    styles = "" if "[data.styles" in text else '[data.styles.blue]\nreference = "rb"\n'
    path.write_text(f'[data]\ntarget = "t"\nreference = "r"\n{text}\n{styles}')
    with pytest.raises(UserError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def _sky_kit(tmp_path_factory, alpha: bool) -> Path:
    """The tiny analogy with a sky behind the reference's original style (opaque; written RGBA with
    alpha 255 everywhere when `alpha`), the rest RGBA with transparency, 16 px."""
    recipe = tmp_path_factory.mktemp("recipe") / "tiny-sky.toml"
    recipe.write_text(
        (FIXTURES / "tiny.toml").read_text()
        + '\n[styles.original.backdrop]\nkind = "sky"\nzenith = [0.22, 0.42, 0.82]\nhorizon = [0.72, 0.82, 0.93]\n'
        'ground = [0.42, 0.4, 0.36]\nclouds = 0.45\ncloud_scale = 2.0\nseed = 0\nscenes = ["reference"]\n'
        + ("alpha = true\n" if alpha else "")
    )
    return make_datasets(str(recipe), root=tmp_path_factory.mktemp("kit"), size=16)


@pytest.fixture(scope="module")
def sky_data(tmp_path_factory):
    return _sky_kit(tmp_path_factory, alpha=False)


@pytest.fixture(scope="module")
def sky_rgba_data(tmp_path_factory):
    """As sky_data, the sky's photos written as RGBA opaque everywhere (as the research project's spheres)."""
    return _sky_kit(tmp_path_factory, alpha=True)


def test_auto_takes_rgba_photos_opaque_everywhere_for_opaque_photographs(sky_data, sky_rgba_data):
    from fastjoint.data import load_split

    for kit in (sky_data, sky_rgba_data):
        sky = load_split(kit / "reference" / "original", "train")
        cut_out = load_split(kit / "reference" / "recolour", "train")
        assert not sky.transparent and cut_out.transparent
        assert resolve_background("auto", "k", sky.transparent, True, (1, 1, 1)) == LEARNED
        assert resolve_background("auto", "k", cut_out.transparent, True, (1, 1, 1)) == RANDOM
    on_disk = iio.imread(next((sky_rgba_data / "reference" / "original" / "train").glob("*.png")))
    assert on_disk.shape[-1] == 4 and (on_disk[..., 3] == 255).all()  # RGBA, opaque everywhere
    plain = iio.imread(next((sky_data / "reference" / "original" / "train").glob("*.png")))
    assert plain.shape[-1] == 3 and np.array_equal(on_disk[..., :3], plain)  # the same photo


@pytest.mark.slow  # trains, and starts the CLI
def test_a_run_on_rgba_opaque_photos_learns_its_sky_and_a_resumed_run_keeps_its_backgrounds(sky_rgba_data, tmp_path):
    config = tiny_config(sky_rgba_data, tmp_path / "runs", train={"steps": 20, "rays_per_pairing": 128, "checkpoint_every": 10})
    path = write_config(config, tmp_path / "sky.toml")
    result = run_cli("train", str(path), "--no-eval", "--no-render", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if line.startswith("background auto: ")]
    assert said == [
        "background auto: target:original random (transparent photos), reference:original learned (opaque photos), "
        "reference:recolour random (transparent photos)"
    ]
    # A run trained before `auto` looked at the pixels took these photos for cut-outs: it resumes as it was trained.
    latest = config.run_dir / "checkpoints" / "latest.pt"
    state = torch.load(latest, weights_only=True)
    assert state["backgrounds"]["reference:original"] == LEARNED
    state["backgrounds"]["reference:original"] = RANDOM
    state["environments"] = {}
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:2]
    kept = {index for group in state["optimizer"]["param_groups"] for index in group["params"]}
    state["optimizer"]["state"] = {index: moments for index, moments in state["optimizer"]["state"].items() if index in kept}
    torch.save(state, latest)
    (config.run_dir / "checkpoints" / "previous.pt").unlink()
    resumed = run_cli("train", str(path), "--resume", "--train.steps", "30", "--no-eval", "--no-render", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "reference:original random (opaque photos)" in resumed.stdout
    state = torch.load(latest, weights_only=True)
    assert state["step"] == 30 and state["backgrounds"]["reference:original"] == RANDOM and not state["environments"]


@pytest.mark.slow  # trains, and starts the CLI
def test_a_learned_background_trains_on_opaque_images_and_renders_on_white_on_request(sky_data, tmp_path):
    from fastjoint.evaluate import evaluate
    from fastjoint.run import load_run
    from fastjoint.train import train

    config = tiny_config(sky_data, tmp_path / "runs", train={"steps": 100, "rays_per_pairing": 256, "checkpoint_every": 100})
    train(config)
    run = load_run(config.run_dir)
    pairings = {p.name: p for p in config.data.pairings.all}
    assert run.built.background(pairings["reference:original"]) == LEARNED  # opaque: auto -> learned
    assert run.built.background(pairings["reference:recolour"]) == RANDOM  # RGBA: auto -> random
    assert run.built.environment(pairings["target:recolour"]) is None  # the target is RGBA
    assert list(run.built.environments) == ["reference_original"]
    # The environment map learned the sky: behind a test view, it matches the photo's corners (all sky).
    from fastjoint.data import load_split

    split = load_split(config.data.reference, "test")
    truth = split.float_images(0)[..., :3]
    behind = run.built.backdrop_image(pairings["reference:original"], split.poses[0], split.camera)
    corners = (slice(0, 3), slice(0, 3)), (slice(0, 3), slice(-3, None))
    for rows, cols in corners:
        assert (truth[rows, cols] - 0.5).abs().mean() > 0.12  # the grey it starts from is far off
        assert (behind[rows, cols] - truth[rows, cols]).abs().mean() < 0.06, (behind[rows, cols], truth[rows, cols])
    result = evaluate(config.run_dir, run=run)
    assert result.pairings["reference:original"].psnr > 17.0, result.pairings

    # The CLI: renders show the learned sky at a view's corner, or white with --background white.
    on_sky = run_cli("render", str(config.run_dir), "--pairing", "reference:original")
    assert on_sky.returncode == 0, on_sky.stderr
    folder = config.run_dir / "renders" / "reference_original"
    sky_corner = iio.imread(folder / "test_000.png")[0, 0].astype(int)
    white = run_cli("render", str(config.run_dir), "--pairing", "reference:original", "--background", "white")
    assert white.returncode == 0, white.stderr
    white_corner = iio.imread(folder / "test_000.png")[0, 0].astype(int)
    truth_corner = (truth[0, 0] * 255).round().int().numpy()
    assert (truth_corner < 225).any(), truth_corner  # the photo's sky is not white there
    assert abs(sky_corner - truth_corner).max() <= 15, (sky_corner, truth_corner)
    assert (white_corner >= 240).all(), white_corner
    bad = run_cli("eval", str(config.run_dir), "--background", "sky")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        'error: --background: expected "white", "black" or "#rrggbb", got \'sky\''
    ], bad.stderr
    white_eval = run_cli("eval", str(config.run_dir), "--background", "white")
    assert white_eval.returncode == 0, white_eval.stderr
    scores = json.loads((config.run_dir / "eval.json").read_text())["pairings"]
    assert scores["reference:original"]["psnr"] < result.pairings["reference:original"].psnr - 3.0  # white vs a sky
