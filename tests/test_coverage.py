"""Coverage (fastjoint.coverage): the density of the reference's features and its threshold on
synthetic features; then, on a tiny run whose reference lacks two of the target's three
materials, eval's share and warning, analyze's picture, the viewer's overlay and the benchmark.
"""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import FIXTURES, fresh_seed, run_cli, tiny_config, write_config
from fastjoint.coverage import (
    KDE_POINTS,
    MIN_SAMPLES,
    UNCOVERED_QUANTILE,
    WARN_SHARE,
    Coverage,
    KernelDensity,
    outline,
    pixel_features,
    tint_uncovered,
)
from fastjoint.plane import plane_points
from fastjoint.render import SampleCache


def clusters(n: int, generator: torch.Generator) -> torch.Tensor:  # [n, 2]
    """Two elongated clusters in the feature plane, tanh-bounded as the model's features are."""
    centres = torch.tensor([[-0.5, 0.4], [0.45, -0.3]])
    which = torch.randint(0, 2, (n,), generator=generator)
    spread = torch.tensor([0.12, 0.05])
    return torch.tanh(centres[which] + torch.randn(n, 2, generator=generator) * spread)


def test_scott_bandwidth_and_density_match_the_formula():
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    samples = torch.randn(300, 3, generator=generator) * torch.tensor([0.2, 0.5, 0.1])
    density = KernelDensity.scott(samples)
    expected_h = samples.double().std(dim=0) * 300 ** (-1.0 / 7.0)
    torch.testing.assert_close(density.bandwidth, expected_h)
    queries = torch.randn(50, 3, generator=generator) * 0.3
    # The density written out as a sum of product Gaussians, in numpy.
    x, p, h = queries.double().numpy(), samples.double().numpy(), expected_h.numpy()
    z = (x[:, None, :] - p[None, :, :]) / h
    kernels = np.exp(-0.5 * (z**2).sum(-1)) / ((2 * np.pi) ** 1.5 * h.prod())
    np.testing.assert_allclose(density(queries).numpy(), kernels.mean(1), rtol=1e-9, err_msg=f"seed {seed}")
    # Leaving a point out removes its own kernel, nothing else.
    loo = density.leave_one_out().numpy()
    own = np.exp(-0.5 * (((p[:, None, :] - p[None, :, :]) / h) ** 2).sum(-1)) / ((2 * np.pi) ** 1.5 * h.prod())
    np.fill_diagonal(own, 0.0)
    np.testing.assert_allclose(loo, own.sum(1) / 299, rtol=1e-9, err_msg=f"seed {seed}")


def test_coverage_keeps_99_percent_of_the_reference_and_leaves_the_rest_of_the_plane_out():
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    reference = clusters(6000, generator)
    coverage = Coverage.of(reference)
    assert coverage is not None and coverage.samples == 6000
    assert len(coverage.density.points) == KDE_POINTS  # subsampled
    # Fresh features from the reference's own distribution: about 99% covered.
    fresh = coverage.covered(clusters(4000, generator)).double().mean()
    assert 1 - 3 * UNCOVERED_QUANTILE < fresh <= 1.0, (fresh, seed)
    # Far from both clusters (between them, in the empty corners): uncovered.
    away = torch.tensor([[0.0, 0.0], [-0.8, -0.8], [0.8, 0.8], [0.9, -0.9], [-0.5, -0.2], [0.45, 0.3]])
    assert not coverage.covered(away).any(), (coverage.density(away), coverage.level, seed)
    assert coverage.covered(torch.tanh(torch.tensor([[-0.5, 0.4], [0.45, -0.3]]))).all()
    # Deterministic: the same reference, the same coverage.
    again = Coverage.of(reference)
    assert again.level == coverage.level and torch.equal(again.density.points, coverage.density.points)


def test_coverage_needs_enough_reference_features():
    assert Coverage.of(torch.rand(MIN_SAMPLES - 1, 2)) is None
    assert Coverage.of(torch.rand(MIN_SAMPLES, 2)) is not None


def test_coverage_works_in_more_dimensions():
    generator = torch.Generator().manual_seed(fresh_seed())
    reference = torch.tanh(torch.randn(2000, 4, generator=generator) * 0.1 + 0.3)
    coverage = Coverage.of(reference)
    assert coverage.covered(torch.full((1, 4), math.tanh(0.3))).all()
    assert not coverage.covered(torch.full((1, 4), -0.6)).any()


def test_the_table_reads_the_density_where_the_features_are():
    """The 2-D table (viewer, pictures) agrees with the direct density, up to its bilinear reading at the boundary."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    coverage = Coverage.of(clusters(2000, generator))
    table = coverage.table()
    # Binned and blurred, the table is the direct density at its nodes, but for the binning.
    nodes = torch.randperm(256 * 256, generator=generator)[:3000]
    direct = coverage.density(plane_points(256)[nodes])
    assert (table.density.reshape(-1)[nodes].double() - direct).abs().max() < 0.01 * direct.max(), seed
    queries = torch.rand(2000, 2, generator=generator) * 2 - 1
    queries = torch.cat([queries, clusters(1000, generator)])
    agree = (table.covered(queries) == coverage.covered(queries)).double().mean()
    assert agree > 0.99, (agree, seed)
    # The table's rows run from feature y = +1 down: the upper-left cluster's centre is covered, its mirror image is not.
    x, y = (math.tanh(v) for v in (-0.5, 0.4))
    row, column = round((1 - y) / 2 * 255), round((x + 1) / 2 * 255)
    assert table.mask[row, column] and not table.mask[255 - row, column]


def test_a_pixel_feature_is_its_samples_features_weighted():
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    n_rays = 7
    ray_indices = torch.sort(torch.randint(0, n_rays - 1, (40,), generator=generator)).values  # the last ray has none
    weights = torch.rand(40, generator=generator) * 0.2
    features = torch.rand(40, 2, generator=generator) * 2 - 1
    opacity = torch.zeros(n_rays).index_add(0, ray_indices, weights)
    got_opacity, got = pixel_features(SampleCache(ray_indices, weights, features, opacity, n_rays))
    for ray in range(n_rays - 1):
        mine = ray_indices == ray
        if mine.any():
            expected = (features[mine] * weights[mine, None]).sum(0) / weights[mine].sum()
            torch.testing.assert_close(got[ray], expected, msg=f"seed {seed}")
    assert torch.equal(got[-1], torch.zeros(2)) and torch.equal(got_opacity, opacity)


def test_tint_and_outline_mark_only_their_pixels():
    generator = np.random.default_rng(fresh_seed())
    image = generator.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = generator.random((20, 30)) < 0.3
    tinted = tint_uncovered(image, mask)
    assert np.array_equal(tinted[~mask], image[~mask])
    assert (tinted[mask][:, [0, 2]].astype(int) >= 160).all() and (tinted[mask][:, 1] <= 90).all()
    disc = np.hypot(*np.mgrid[-10:10, -10:10]) < 6
    drawn = outline(np.full((20, 20, 3), 200, dtype=np.uint8), disc)
    edge = (drawn != 200).any(-1)
    assert edge.sum() > 20 and not edge[~disc].any() and not edge[10, 10]  # a ring inside the disc, not its centre


# --- on a trained run ------------------------------------------------------------------

UNSEEN_STEPS = 900  # at 300 steps the tiny run's features still crowd one corner of the plane


@pytest.fixture(scope="module")
def unseen_run(tmp_path_factory):
    """The tiny analogy whose reference shows only the yellow paint (tests/fixtures/tiny-unseen.toml), trained, not evaluated."""
    from fastjoint.scenes import make_datasets

    folder = tmp_path_factory.mktemp("unseen")
    kit = make_datasets(str(FIXTURES / "tiny-unseen.toml"), root=folder / "kit")
    config = tiny_config(kit, folder / "runs", train={"steps": UNSEEN_STEPS})
    path = write_config(config, folder / "unseen.toml")
    result = run_cli("train", str(path), "--no-eval", "--no-render", cwd=folder)
    assert result.returncode == 0, result.stderr
    return config.run_dir, kit


@pytest.mark.slow  # trains, and starts the CLI
def test_eval_reports_the_uncovered_share_and_warns_when_it_is_large(unseen_run, trained_run):
    run_dir, kit = unseen_run
    result = run_cli("eval", str(run_dir))
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((run_dir / "eval.json").read_text())
    coverage = evaluation["coverage"]
    assert coverage["split"] == "test" and coverage["views"] == 3 and coverage["visible"] > 100
    share = coverage["share"]
    assert share > WARN_SHARE, coverage  # red and grey: two of the target's three materials
    assert evaluation["transfers"]["target:recolour"]["uncovered_share"] == share
    table = [line for line in result.stderr.splitlines() if "target:recolour (transfer)" in line]
    assert len(table) == 1 and f"{share:.1%}" in table[0], result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{share:.1%} of the target's visible surface" in warnings[0], result.stderr

    # The session's tiny run (its reference has every material of the target) covers more of it.
    plain = json.loads((trained_run[0] / "eval.json").read_text())["coverage"]
    assert plain["share"] < share / 2, (plain, coverage)

    # What is uncovered is the materials the reference lacks: red and grey, far more than the yellow.
    from fastjoint.coverage import reference_coverage, target_share
    from fastjoint.run import load_run

    run = load_run(run_dir)
    _, masks = target_share(run, reference_coverage(run))
    truth = torch.stack([torch.from_numpy(iio.imread(kit / "target" / "original" / "test" / f"r_{i}.png")) for i in range(3)]).float() / 255
    rgb = truth[..., :3]
    yellow = (rgb[..., 0] - rgb[..., 2] > 0.3) & (rgb[..., 1] - rgb[..., 2] > 0.2)
    visible = torch.stack([m.visible for m in masks]) & (truth[..., 3] > 0.99)
    uncovered = torch.stack([m.uncovered for m in masks])
    on_yellow = uncovered[visible & yellow].double().mean()
    elsewhere = uncovered[visible & ~yellow].double().mean()
    assert elsewhere > 3 * on_yellow and elsewhere > 0.2, (float(elsewhere), float(on_yellow))


@pytest.mark.slow  # trains, and starts the CLI
def test_analyze_marks_the_uncovered_pixels(unseen_run):
    run_dir, _ = unseen_run
    result = run_cli("analyze", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "coverage.png" in result.stdout and "uncovered:" in result.stdout
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis["coverage"]["share"] > WARN_SHARE
    picture = iio.imread(run_dir / "analysis" / "coverage.png")
    assert picture.shape[0] == 16 + 256  # titled panels as analyze's others
    views = picture[16:, : picture.shape[1] - 2 * (256 + 8)].astype(int)  # the panel left of the two planes
    magenta = (views[..., 0] > 160) & (views[..., 2] > 160) & (views[..., 1] < 90)
    assert magenta.mean() > 0.01, magenta.mean()
    # The target's plane: magenta dots (its uncovered features) and the covered region's black outline.
    plane = picture[16:, -256:].astype(int)
    assert ((plane[..., 0] > 200) & (plane[..., 2] > 200) & (plane[..., 1] < 40)).sum() > 10
    assert (plane.sum(-1) == 0).sum() > 50


@pytest.mark.slow  # trains
@pytest.mark.parametrize("renderer", ["exact", "fast"])
def test_the_viewer_overlays_the_same_mask(unseen_run, renderer):
    from fastjoint.coverage import reference_coverage, target_views, view_coverage
    from fastjoint.run import load_run
    from fastjoint.viewer import ViewerCore

    run_dir, _ = unseen_run
    run = load_run(run_dir)
    run.built.use_renderer(renderer)
    split, _ = target_views(run)
    core = ViewerCore(run)
    plain = core.render(split.poses[0], split.camera)
    shown = core.set_show_uncovered(True)
    tinted = (shown != plain).any(-1)
    expected = view_coverage(run.built, reference_coverage(run), split.poses[0], split.camera).uncovered.numpy()
    assert expected.sum() > 5
    # The viewer reads the density from its table, eval directly: they may differ at the boundary's pixels.
    assert (tinted != expected).sum() <= max(2, 0.1 * expected.sum()), (tinted.sum(), expected.sum())
    assert core.uncovered_share == pytest.approx(tinted.sum() / (core.frame.cache.opacity > 0.95).sum().item())
    # The mask is the frame's, whatever the style: the same pixels in the original style.
    original_tinted = core.set_style("original")
    original = core.set_show_uncovered(False)
    assert np.array_equal((original_tinted != original).any(-1), tinted)
    assert core.uncovered_share is None
    assert np.array_equal(core.set_style("recolour"), plain)


@pytest.mark.slow  # trains
def test_the_benchmark_finds_the_error_in_the_uncovered_pixels(unseen_run, trained_run, tmp_path):
    from benchmarks.coverage import main

    run_dir, _ = unseen_run
    assert main([str(run_dir), str(trained_run[0]), "--results", str(tmp_path)]) == 0
    results = json.loads(next(tmp_path.glob("*-coverage.json")).read_text())
    rows = {row["run"]: row for row in results["runs"]}
    unseen = rows[str(run_dir)]
    assert unseen["transfer"] == "target:recolour" and unseen["share"] > WARN_SHARE
    assert unseen["pixels_uncovered"] + unseen["pixels_covered"] > 100
    # The transfer's error where the reference shows nothing like the target is far above the rest's.
    assert unseen["mse_uncovered"] > 2 * unseen["mse_covered"], unseen
    # Both runs are named "tiny": one group, its pixels pooled.
    (group,) = results["groups"]
    assert group["group"] == "tiny" and group["runs"] == 2
    pooled = sum(r["sse_uncovered"] for r in rows.values()) / sum(r["pixels_uncovered"] for r in rows.values())
    assert group["mse_uncovered"] == pytest.approx(pooled)


@pytest.mark.slow
@pytest.mark.browser
def test_show_uncovered_in_headless_chromium(unseen_run):
    """The viewer's *Show uncovered* tints the frame in the browser, and unticked, takes the tint off."""
    from test_viewer import _browser_or_skip

    from benchmarks import browser

    _browser_or_skip()

    def magenta(image: np.ndarray) -> float:
        image = image.astype(int)
        return float(((image[..., 0] > 160) & (image[..., 2] > 160) & (image[..., 1] < 90)).mean())

    def settled(page, unlike=None) -> np.ndarray:
        last = page.scene_pixels()
        for _ in range(100):
            page.page.wait_for_timeout(100)
            now = page.scene_pixels()
            if np.array_equal(now, last) and (unlike is None or not np.array_equal(now, unlike)):
                return now
            last = now
        raise AssertionError("the 3D view did not settle")

    run_dir, _ = unseen_run
    viewer = browser.Viewer(run_dir, "--moving-size", "24", "--resting-size", "48")
    try:
        with browser.open_viewer(viewer.url()) as page:
            first = page.wait_status(lambda s: s.height == 48, "the sharp first frame")
            plain = settled(page)
            page.page.get_by_label("Show uncovered").check()
            page.wait_status(lambda s: s.frame > first.frame, "the frame with the uncovered pixels tinted")
            tinted = settled(page, unlike=plain)
            assert magenta(tinted) > magenta(plain) + 0.002, (magenta(tinted), magenta(plain))
            assert page.page.get_by_text("uncovered (magenta):").count() == 1
            shown = page.statuses()[-1].frame
            page.page.get_by_label("Show uncovered").uncheck()
            page.wait_status(lambda s: s.frame > shown, "the frame without the tint")
            assert magenta(settled(page, unlike=tinted)) < magenta(tinted)
    finally:
        status = viewer.stop()
    assert status == 143, viewer.output
