"""The scene kit: recipes, the analytic tracer, and the datasets it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from fastjoint.data import load_split
from fastjoint.errors import UserError
from fastjoint.scenes import load_recipe, make_datasets
from fastjoint.scenes.make import render_view, view_poses
from fastjoint.scenes.raytrace import intersect
from fastjoint.scenes.recipe import Shape

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


def test_demo_recipe_parses():
    recipe = load_recipe(REPO / "data" / "demo.toml")
    assert set(recipe.scenes) == {"target", "reference"}
    assert set(recipe.styles) == {"original", "recolour", "red"}
    materials, _ = recipe.style("recolour")
    assert materials["yellow"].colour != recipe.materials["yellow"].colour
    assert materials["red"] == recipe.materials["red"]
    # Every material of the target appears in the reference, so the analogy is complete.
    used = lambda scene: {shape.material for shape in recipe.scenes[scene]}
    assert used("target") <= used("reference")


def test_ray_hits_each_primitive_at_the_analytic_distance():
    origins = np.array([[-5.0, 0.1, 0.2]])
    dirs = np.array([[1.0, 0.0, 0.0]])
    t, normal = intersect(Shape("sphere", "m", (0.0, 0.0, 0.0), radius=1.0), origins, dirs)
    assert t[0] == pytest.approx(5.0 - math.sqrt(1 - 0.05))
    t, normal = intersect(Shape("box", "m", (1.0, 0.0, 0.0), size=(2.0, 2.0, 2.0)), origins, dirs)
    assert t[0] == pytest.approx(5.0) and normal[0] == pytest.approx([-1.0, 0.0, 0.0])
    # A cylinder along x (its local z rotated by 90 degrees about y) is hit on its cap.
    t, normal = intersect(Shape("cylinder", "m", (0.0, 0.0, 0.0), radius=0.5, height=2.0, rotation=(0.0, 90.0, 0.0)), origins, dirs)
    assert t[0] == pytest.approx(4.0) and abs(normal[0][0]) == pytest.approx(1.0)
    t, _ = intersect(Shape("sphere", "m", (0.0, 3.0, 0.0), radius=1.0), origins, dirs)
    assert np.isinf(t[0])


def test_datasets_are_complete_and_deterministic(tmp_path):
    first = make_datasets(str(FIXTURES / "tiny.toml"), root=tmp_path / "a")
    second = make_datasets(str(FIXTURES / "tiny.toml"), root=tmp_path / "b")
    for scene in ("target", "reference"):
        for style in ("original", "recolour"):
            for split, n in (("train", 24), ("val", 2), ("test", 3)):
                loaded = load_split(first / scene / style, split)
                assert len(loaded) == n and loaded.images.shape[1:3] == (24, 24) and loaded.transparent
            a = (first / scene / style / "test" / "r_1.png").read_bytes()
            assert a == (second / scene / style / "test" / "r_1.png").read_bytes()
    # Styles share cameras view for view, and the recolour changes only the yellow paint.
    original = load_split(first / "target" / "original", "test")
    recolour = load_split(first / "target" / "recolour", "test")
    assert np.array_equal(original.poses.numpy(), recolour.poses.numpy())
    changed = (original.images - recolour.images).abs().sum(-1) > 0.05
    assert 0.05 < changed.float().mean() < 0.6
    assert (original.images[..., 3] == recolour.images[..., 3]).all()  # same geometry


def test_make_is_a_cache(tmp_path):
    folder = make_datasets(str(FIXTURES / "tiny.toml"), root=tmp_path)
    stamp = folder / "kit.json"
    before = stamp.stat().st_mtime_ns
    assert make_datasets(str(FIXTURES / "tiny.toml"), root=tmp_path) == folder
    assert stamp.stat().st_mtime_ns == before
    smaller = make_datasets(str(FIXTURES / "tiny.toml"), root=tmp_path, size=12)
    assert smaller.name == "tiny-12px" and json.loads((smaller / "kit.json").read_text())["size"] == 12
    assert iio.imread(smaller / "target" / "original" / "train" / "r_0.png").shape == (12, 12, 4)


def test_test_views_ring_the_scene():
    recipe = load_recipe(FIXTURES / "tiny.toml")
    poses = view_poses(recipe)
    centres = poses["test"][:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), recipe.camera.radius, rtol=1e-5)
    np.testing.assert_allclose(np.degrees(np.arcsin(centres[:, 2] / recipe.camera.radius)), recipe.views.test_elevation, rtol=1e-4)
    image = render_view(recipe, "target", "original", poses["test"][0])
    assert image.dtype == np.uint8 and image[..., 3].max() == 255 and image[0, 0, 3] == 0  # object centred


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.replace("size = 24", "size = 2"), r"'camera.size' must be an integer of at least 8, got 2$"),
        (
            lambda t: t.replace('material = "grey"', 'material = "gray"'),
            r"'scenes.reference\[2\].material' names an unknown material 'gray'",
        ),
        (
            lambda t: t.replace('kind = "box"', 'kind = "cone"'),
            r"'scenes.target\[0\].kind' must be one of \"sphere\", \"box\", \"cylinder\", got 'cone'$",
        ),
        (
            lambda t: t.replace("[styles.recolour.materials.yellow]", "[styles.recolour.materials.blue]"),
            r"'styles.recolour.materials.blue' changes a material",
        ),
        (lambda t: t.replace("specular = 0.2", "specular = 0.2\nshine = 3"), r"unknown key 'materials.yellow.shine'"),
        (
            lambda t: t.replace("colour = [0.85, 0.12, 0.1]", "colour = [2, 0, 0]"),
            r"'materials.red.colour' must be 3 numbers in \[0, 1\], got \[2, 0, 0\]$",
        ),
        (
            lambda t: t.replace("specular = 0.2", 'specular = 0.2\npattern = { kind = "stripes", frame = "object" }', 1),
            r"'materials.yellow.pattern.frame' must be one of \"world\", \"local\", got 'object'$",
        ),
        (
            lambda t: t.replace("radius = 0.7\n", ""),
            r"'scenes.reference\[0\].radius' must be given, at least 0.001, for a sphere, got 0.0$",
        ),
        (
            lambda t: t.replace("radius = 0.7\n", "radius = 0.7\nheight = 1.0\n"),
            r"'scenes.reference\[0\].height' is not a field of a sphere$",
        ),
        (
            lambda t: t.replace("direction = [0.6, -0.5, 0.8]", "direction = [0, 0, 0]"),
            r"'lights.directional\[0\].direction' must not be zero$",
        ),
        (
            lambda t: t.replace("[[lights.directional]]", "[lights.directional]"),
            r"'lights.directional' must be a list of tables \(\[\[lights.directional\]\]\)$",
        ),
        (
            lambda t: t.replace("seed = 1\n", "seed = 1\nmin_elevation = 80.0\n"),
            r"'views.min_elevation' and 'max_elevation' need -90 <= min < max <= 90$",
        ),
        (lambda t: t.replace("test = 3", "test = 3.5"), r"'views.test' must be an integer of at least 1, got 3.5$"),
        (lambda t: t.replace("[styles.original]", "[styles.plain]"), r"'styles' must be a table that includes \[styles.original\]$"),
    ],
)
def test_recipe_mistakes_name_the_key(tmp_path, change, message):
    path = tmp_path / "bad.toml"
    path.write_text(change((FIXTURES / "tiny.toml").read_text()))
    with pytest.raises(UserError, match=message) as error:
        load_recipe(path)
    assert str(error.value).startswith(str(path))


def test_paper_recipe_styles():
    recipe = load_recipe(REPO / "data" / "paper.toml")
    assert set(recipe.styles) == {"original", "recolour", "relight", "pattern", "stripes"}
    assert {"reference", "digger", "robot"} <= set(recipe.scenes)
    _, relit = recipe.style("relight")
    assert [light.colour[0] > light.colour[2] for light in relit.directional] == [True, False]  # one red, one blue
    a, b = (np.asarray(light.direction) for light in relit.directional)
    assert abs(a @ b) < 1e-3  # orthogonal
    patterned, lighting = recipe.style("pattern")
    assert patterned["yellow"].pattern is not None and lighting == recipe.lighting
    used = lambda scene: {shape.material for shape in recipe.scenes[scene]}
    assert used("digger") <= used("reference") and used("robot") <= used("reference")


def test_check_pattern_alternates_on_a_face():
    from fastjoint.scenes.raytrace import albedo
    from fastjoint.scenes.recipe import Material, Pattern

    material = Material((1.0, 1.0, 0.0), pattern=Pattern("check", 4.0, ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))))
    points = np.stack([np.linspace(0.01, 0.99, 9), np.zeros(9), np.zeros(9)], axis=1)  # along x, 4 cells
    colours = albedo(material, points)[:, 0]
    assert np.all(colours[(points[:, 0] * 4).astype(int) % 2 == 0] == 0)
    assert np.all(colours[(points[:, 0] * 4).astype(int) % 2 == 1] == 1)


def test_noise_pattern_is_smooth_fills_its_range_and_does_not_repeat():
    """Value noise blends the two colours: continuous, the same at the same point, using the whole range
    between them, and unlike itself whole cells away, where a check repeats."""
    from fastjoint.scenes.raytrace import albedo, value_noise
    from fastjoint.scenes.recipe import Material, Pattern

    black, white = (0.0, 0.0, 0.0), (1.0, 0.5, 0.0)
    material = Material((1.0, 1.0, 0.0), pattern=Pattern("noise", 4.0, (black, white)))
    points = np.random.default_rng(0).uniform(-2.0, 2.0, (20000, 3))
    colours = albedo(material, points)
    np.testing.assert_allclose(colours[:, 1], colours[:, 0] * 0.5)  # every colour on the line from black to white
    assert colours[:, 0].min() < 0.05 and colours[:, 0].max() > 0.95 and 0.4 < colours[:, 0].mean() < 0.6
    assert np.array_equal(albedo(material, points), colours)
    step = 1e-4  # continuous: a tiny step changes it a little
    assert np.abs(value_noise(points * 4 + step) - value_noise(points * 4)).max() < 0.05
    for shift in (1.0, 2.0, 3.0):  # whole cells away (where a check repeats): unrelated values
        moved = value_noise(points * 4 + shift)
        assert abs(np.corrcoef(moved, value_noise(points * 4))[0, 1]) < 0.2


def test_local_stripes_follow_each_shape_not_the_world():
    from fastjoint.scenes.raytrace import albedo
    from fastjoint.scenes.recipe import Material, Pattern, Shape

    stripes = Pattern("stripes", 5.0, ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), frame="local")
    material = Material((1.0, 1.0, 0.0), pattern=stripes)
    heights = np.linspace(0.01, 0.39, 20)  # bands are 0.2 apart, counted up from each base
    column = lambda x, y: np.stack([np.full(20, x), np.full(20, y), heights], axis=1)  # noqa: E731
    low = Shape("box", "yellow", (0.0, 0.0, 0.2), size=(1.0, 1.0, 0.4))  # base at z = 0
    high = Shape("box", "yellow", (3.0, 0.0, 0.27), size=(1.0, 1.0, 0.4))  # base at z = 0.07
    expected = (np.floor(heights * 5) % 2)[:, None]  # black first, then white
    assert np.array_equal(albedo(material, column(0.0, 0.0), low), np.repeat(expected, 3, axis=1))
    # The same world points on a part whose base sits 0.07 higher: the bands move with it.
    shifted = (np.floor((heights - 0.07) * 5 + 1e-4) % 2)[:, None]
    assert np.array_equal(albedo(material, column(3.0, 0.0), high), np.repeat(shifted, 3, axis=1))
    assert not np.array_equal(shifted, expected)
    # Across x and y a stripe does not change; turned on its side, the bands run along world x.
    assert np.array_equal(albedo(material, column(0.4, -0.3), low), albedo(material, column(0.0, 0.0), low))
    side = Shape("cylinder", "yellow", (0.0, 0.0, 0.0), radius=0.1, height=0.8, rotation=(0.0, 90.0, 0.0))
    along_x = np.stack([heights - 0.4, np.zeros(20), np.zeros(20)], axis=1)  # world x = local z
    assert np.array_equal(albedo(material, along_x, side)[:, 0], np.floor(heights * 5 + 1e-4) % 2)


def test_paper_stripes_style_is_local_and_in_every_target():
    recipe = load_recipe(REPO / "data" / "paper.toml")
    materials, lighting = recipe.style("stripes")
    pattern = materials["yellow"].pattern
    assert pattern.kind == "stripes" and pattern.frame == "local" and lighting == recipe.lighting
    assert recipe.style("pattern")[0]["yellow"].pattern.frame == "world"


def test_unseen_recipe_is_the_paper_kit_with_one_material_the_reference_lacks():
    """data/unseen.toml: the paper's reference, lights and styles as they are (so its reference photos are
    the paper's), and the digger with its cab in a material no reference sphere has."""
    paper, unseen = (load_recipe(REPO / "data" / f"{name}.toml") for name in ("paper", "unseen"))
    assert unseen.scenes["reference"] == paper.scenes["reference"]
    assert (unseen.camera, unseen.views, unseen.lighting) == (paper.camera, paper.views, paper.lighting)
    for style in unseen.styles:
        assert unseen.styles[style] == paper.styles[style], style
    used = lambda recipe, scene: {shape.material for shape in recipe.scenes[scene]}  # noqa: E731
    assert used(unseen, "violetcab") - used(unseen, "reference") == {"violet"}
    assert {m: unseen.materials[m] for m in paper.materials} == paper.materials
    changed = [i for i, (a, b) in enumerate(zip(paper.scenes["digger"], unseen.scenes["violetcab"], strict=True)) if a != b]
    assert len(changed) == 1 and unseen.scenes["violetcab"][changed[0]].material == "violet"


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*-*.toml")))
def test_experiment_configs_name_the_kit_datasets(config):
    from fastjoint.config import load_config

    loaded = load_config(REPO / "configs" / config)
    recipe = load_recipe(REPO / "data" / f"{loaded.data.kit}.toml")
    target, style = config.removesuffix(".toml").removesuffix("-styles").split("-")
    styles = style.split("+") if style != "two" else ["recolour", "relight"]
    kit = loaded.data.kit
    assert loaded.data.target.endswith(f"{kit}/{target}/original")
    assert loaded.data.reference.endswith(f"{kit}/reference/original")
    assert list(loaded.data.styles) == styles
    for name in styles:
        assert loaded.data.styles[name].reference.endswith(f"{kit}/reference/{name}")
        assert loaded.data.styles[name].target.endswith(f"{kit}/{target}/{name}")
    assert target in recipe.scenes and set(styles) <= set(recipe.styles)
    assert loaded.train == load_config(REPO / "configs" / "demo.toml").train  # the demo's budget


def test_sky_recipe_backdrop_only_behind_the_reference_original(tmp_path):
    recipe = load_recipe(REPO / "data" / "sky.toml")
    assert recipe.backdrop("reference", "original").kind == "sky"
    assert recipe.backdrop("target", "original") is None and recipe.backdrop("reference", "recolour") is None
    pose = view_poses(recipe)["test"][0]
    sky_view = render_view(recipe, "reference", "original", pose)
    transparent = render_view(recipe, "reference", "recolour", pose)
    assert sky_view.shape[-1] == 3 and transparent.shape[-1] == 4 and render_view(recipe, "target", "original", pose).shape[-1] == 4
    # Where the spheres cover the pixel fully, the backdrop does not show: same colour as
    # the transparent render of the original style would have (same materials there).
    original_rgba = render_view(dataclasses_replace_backdrop(recipe), "reference", "original", pose)
    covered = original_rgba[..., 3] == 255
    assert 0.05 < covered.mean() < 0.9
    assert np.array_equal(sky_view[covered], original_rgba[covered][:, :3])
    # Elsewhere the sky: opaque, and not one flat colour (gradient and clouds).
    empty = transparent[..., 3] == 0
    assert sky_view[empty].std(axis=0).min() > 3


def dataclasses_replace_backdrop(recipe):
    """The recipe without any backdrop."""
    import dataclasses

    styles = {name: {k: v for k, v in changes.items() if k != "backdrop"} for name, changes in recipe.styles.items()}
    return dataclasses.replace(recipe, styles=styles)


def test_sky_is_a_function_of_direction_only():
    from fastjoint.scenes.raytrace import sky

    backdrop = load_recipe(REPO / "data" / "sky.toml").backdrop("reference", "original")
    rng = np.random.default_rng()
    dirs = rng.normal(size=(4000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    colours = sky(backdrop, dirs)
    assert np.array_equal(colours, sky(backdrop, dirs.copy()))  # deterministic
    # Below the horizon, a lake: the mirrored sky mixed with the ground colour.
    ground = dirs[:, 2] < -0.06
    mirrored = dirs[ground] * np.array([1.0, 1.0, -1.0])
    np.testing.assert_allclose(colours[ground], 0.6 * sky(backdrop, mirrored) + 0.4 * np.asarray(backdrop.ground), atol=1e-12)
    high = dirs[:, 2] > 0.3
    white = (colours[high] > 0.9).all(axis=1)
    assert 0.05 < white.mean() < 0.95  # some clouds, some blue sky
    clear = replace_clouds(backdrop, 0.0)
    np.testing.assert_allclose(sky(clear, np.array([[0.0, 0.0, 1.0]]))[0], clear.zenith)


def replace_clouds(backdrop, clouds):
    import dataclasses

    return dataclasses.replace(backdrop, clouds=clouds)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t.replace('scenes = ["reference"]', 'scenes = ["robot"]'),
            r"'styles.original.backdrop.scenes' names an unknown scene 'robot'",
        ),
        (lambda t: t.replace('kind = "sky"', 'kind = "room"'), r"'styles.original.backdrop.kind' must be one of \"sky\", got 'room'$"),
        (lambda t: t.replace("clouds = 0.45", "clouds = 1.5"), r"'styles.original.backdrop.clouds' must be a number in \[0, 1\], got 1.5$"),
        (lambda t: t.replace("seed = 0\nscenes", "seeds = 0\nscenes"), r"unknown key 'styles.original.backdrop.seeds'"),
    ],
)
def test_backdrop_mistakes_name_the_key(tmp_path, change, message):
    path = tmp_path / "bad.toml"
    path.write_text(change((REPO / "data" / "sky.toml").read_text()))
    with pytest.raises(UserError, match=message):
        load_recipe(path)


@pytest.mark.slow  # starts the CLI
def test_scenes_make_format_option(tmp_path):
    from conftest import run_cli

    result = run_cli("scenes", "make", str(FIXTURES / "tiny.toml"), "--format", "colmap", "--size", "12", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "tiny-colmap-12px"
    assert json.loads((folder / "kit.json").read_text())["format"] == "colmap"
    split = load_split(folder / "reference" / "recolour", "test")
    assert split.pixels.shape == (3, 12, 12, 4) and split.source.name == "images.txt"
    bad = run_cli("scenes", "make", "tiny", "--format", "ply")
    assert bad.returncode == 2 and "invalid choice 'ply' for argument '--format'" in bad.stderr


def test_sky_config_trains_the_sky_datasets_on_the_demo_budget():
    from fastjoint.config import load_config

    loaded = load_config(REPO / "configs" / "sky.toml")
    assert loaded.data.kit == "sky" and loaded.name == "sky"
    assert loaded.data.reference.endswith("generated/sky/reference/original")
    assert loaded.data.styles["recolour"].reference.endswith("generated/sky/reference/recolour")
    assert loaded.data.target.endswith("generated/sky/target/original")
    assert loaded.data.styles["recolour"].target.endswith("generated/sky/target/recolour")
    demo = load_config(REPO / "configs" / "demo.toml")
    assert (loaded.train, loaded.model, loaded.render) == (demo.train, demo.model, demo.render)
