"""The viewer's recolour (click a material), undo, split comparison, read-only serving and clean stop.

The core is tested without a browser; the rest in headless Chromium, as tests/test_viewer.py
does (skipped without Chromium on a developer's machine, failing under CI).
"""

from __future__ import annotations

import math
import signal
import time

import numpy as np
import pytest
import torch
from test_viewer import _browser_or_skip, _settled

from benchmarks import browser
from conftest import run_cli, tiny_config, write_config
from fastjoint.data import Camera, image_rays, load_split
from fastjoint.errors import UserError
from fastjoint.model import StyleDecoder
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.render import SampleCache
from fastjoint.render.baked import DecoderTable
from fastjoint.run import load_run, use_renderer
from fastjoint.viewer import Frame, ViewerCore, compose
from fastjoint.viewer.controls import is_loopback, writes_allowed
from fastjoint.viewer.core import PAINTED, fit_error
from fastjoint.viewer.recolour import Recolour, RecolouredDecoder, falloff, pick_input, recoloured, surface_features

# --- without a trained run -------------------------------------------------------------


def random_cache(n_rays: int, dim: int = 2) -> SampleCache:
    """Packed samples of `n_rays` rays (some without samples), weights that sum to at most 1 per ray."""
    counts = torch.randint(0, 7, (n_rays,))
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    weights = torch.rand(ray_indices.shape[0]) * 0.45
    opacity = torch.zeros(n_rays).index_add(0, ray_indices, weights)
    weights = weights / opacity.clamp(min=1.0)[ray_indices]  # no ray above one
    opacity = torch.zeros(n_rays).index_add(0, ray_indices, weights)
    return SampleCache(ray_indices, weights, torch.rand(ray_indices.shape[0], dim) * 2 - 1, opacity, n_rays)


def test_the_picked_feature_is_that_of_the_first_sample_past_half_the_weight():
    cache = random_cache(200)
    features, hit = surface_features(cache)
    expected_hit = torch.zeros(200, dtype=torch.bool)
    for ray in range(200):
        total = 0.0
        for sample in (cache.ray_indices == ray).nonzero()[:, 0].tolist():
            total += float(cache.weights[sample])
            if total >= 0.5:
                expected_hit[ray] = True
                assert torch.equal(features[ray], cache.features[sample]), ray
                break
    assert torch.equal(hit, expected_hit)
    assert 0 < int(hit.sum()) < 200  # rays of both kinds were drawn
    assert not features[~hit].any()


def test_a_recoloured_table_is_the_table_of_the_recoloured_decoder():
    """Under the fast renderer a recolour edits the style's table: the same as tabulating the decoder with the recolour."""
    decoder = StyleDecoder(2, 16)
    recolours = [
        Recolour(
            tuple((torch.rand(2) * 2 - 1).tolist()),
            float(torch.empty(()).uniform_(0.05, 0.6)),
            tuple(torch.rand(3).tolist()),
            float(torch.empty(()).uniform_(0.2, 0.8)),
            keep_shading,
        )
        for keep_shading in (False, True)
    ]
    edited = DecoderTable(decoder, pixels=64).edited(lambda colours, points: recoloured(colours, points, recolours))
    torch.testing.assert_close(edited.table, DecoderTable(RecolouredDecoder(decoder, recolours), pixels=64).table)
    features = torch.rand(500, 2) * 2 - 1
    torch.testing.assert_close(edited(features), DecoderTable(RecolouredDecoder(decoder, recolours), pixels=64)(features))
    # The falloff: the colour itself at the picked feature, exp(-1/2) of it one radius away.
    first = recolours[0]
    at = torch.tensor([first.centre, [first.centre[0] + first.radius, first.centre[1]]])
    torch.testing.assert_close(falloff(at, first), torch.tensor([1.0, math.exp(-0.5)]))
    torch.testing.assert_close(recoloured(decoder(at[:1]), at[:1], [first]), torch.tensor([first.colour]))
    # Keeping the shading, the colour blended toward is the picked one scaled by luminance over the picked shade.
    shaded = recolours[1]._replace(colour=(0.2, 0.3, 0.4), shade=0.5)
    colours = torch.tensor([[0.25, 0.25, 0.25], [0.5, 0.5, 0.5]])
    centre = torch.tensor([shaded.centre, shaded.centre])
    torch.testing.assert_close(recoloured(colours, centre, [shaded]), torch.tensor([[0.1, 0.15, 0.2], [0.2, 0.3, 0.4]]))


def test_a_split_frame_is_one_style_left_and_another_right():
    camera = Camera(9, 5, 6.0)
    frame = Frame("target", camera, random_cache(45), torch.rand(3))
    left, right = StyleDecoder(2, 8), StyleDecoder(2, 8)
    split = compose(frame, left, right)
    columns = np.arange(9) < 4
    assert np.array_equal(split[:, columns], compose(frame, left)[:, columns])
    assert np.array_equal(split[:, ~columns], compose(frame, right)[:, ~columns])
    assert not np.array_equal(compose(frame, left), compose(frame, right))


def test_only_a_loopback_viewer_writes_unless_allowed():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host) and writes_allowed(host, False), host
    for host in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.1"):
        assert not is_loopback(host) and not writes_allowed(host, False), host
        assert writes_allowed(host, True), host


# --- the core on the session's trained run ---------------------------------------------


@pytest.fixture(params=["exact", "fast"])
def picked(request, run_copy):
    """The viewer's core on a trained run (each renderer), a rendered test view of the target in `original`."""
    run = load_run(run_copy)
    use_renderer(run, request.param)
    split = load_split(run.dataset(Pairing("target", ORIGINAL)), "test")
    camera = Camera(split.camera.width * 2, split.camera.height * 2, split.camera.focal * 2)
    core = ViewerCore(run, style=ORIGINAL)
    image = core.render(split.poses[1], camera)
    return run, split.poses[1], camera, core, image


@pytest.mark.slow  # the session's trained run
def test_a_click_picks_the_feature_of_the_first_surface_under_it(picked):
    run, pose, camera, core, _ = picked
    features, hit = surface_features(core.frame.cache)
    rays_o, rays_d = image_rays(pose, camera)
    hits, misses = hit.nonzero()[:, 0], (~hit).nonzero()[:, 0]
    assert len(hits) > 10 and len(misses) > 10
    for pixel in hits[torch.randperm(len(hits))[:5]].tolist():
        got = core.pick(rays_o[pixel].tolist(), (rays_d[pixel] * 3.0).tolist())  # any length of direction
        torch.testing.assert_close(torch.tensor(got), features[pixel, :2], atol=1e-4, rtol=0)  # (then the normal)
        inputs = pick_input(run.built, "target", rays_o[pixel].tolist(), rays_d[pixel].tolist())
        torch.testing.assert_close(torch.tensor(inputs), features[pixel], atol=1e-4, rtol=0)
    assert core.pick(rays_o[int(misses[0])].tolist(), rays_d[int(misses[0])].tolist()) is None
    with pytest.raises(UserError, match="nothing under the cursor"):
        core.recolour_at(rays_o[int(misses[0])].tolist(), rays_d[int(misses[0])].tolist(), (0.0, 0.0, 1.0), 0.2)


@pytest.mark.slow  # the session's trained run
def test_a_recolour_changes_the_picked_material_and_undo_takes_it_back(picked):
    run, pose, camera, core, before = picked
    features, hit = surface_features(core.frame.cache)
    pixel = int(hit.nonzero()[torch.randint(int(hit.sum()), ())])
    rays_o, rays_d = image_rays(pose, camera)
    colour = tuple(torch.rand(3).tolist())
    after = core.recolour_at(rays_o[pixel].tolist(), rays_d[pixel].tolist(), colour, 0.1)
    recolour = core.edits[-1]
    assert core.style == PAINTED and isinstance(recolour, Recolour)
    # The frame is the base style with the recolour blended in: under the exact renderer (and for decoders that
    # read the normal, which have no table) on each sample's colour, else as an edit of the style's table.
    recoloured_decoder = RecolouredDecoder(run.built.model.decoders[ORIGINAL], [recolour])
    if run.built.renderer == "exact" or run.built.model.decoder_normal:
        assert np.array_equal(after, compose(core.frame, recoloured_decoder))
    else:
        assert np.abs(after.astype(int) - compose(core.frame, DecoderTable(recoloured_decoder, run.built.device))).max() <= 1
    # Pixels whose samples are all far from the picked feature keep their colour; the picked pixel takes the new one.
    cache = core.frame.cache
    near = torch.zeros(cache.n_rays).scatter_reduce(0, cache.ray_indices, falloff(cache.features, recolour), "amax", include_self=False)
    far = (near < 1e-3).reshape(camera.height, camera.width).numpy()
    assert far.any() and (~far).any()
    assert np.abs(after[far].astype(int) - before[far]).max() <= 1
    y, x = divmod(pixel, camera.width)
    picked_before = np.abs(before[y, x].astype(float) - np.array(colour) * 255).sum()
    assert np.abs(after[y, x].astype(float) - np.array(colour) * 255).sum() < picked_before
    # Retuning the last recolour replaces it; undo goes back edit by edit, to the base style at last.
    wider = core.recolour(recolour._replace(radius=0.4), replace_last=True)
    assert len(core.edits) == 1 and not np.array_equal(wider, after)
    core.recolour(Recolour(recolour.centre, 0.3, (1.0, 0.0, 1.0)))
    assert np.array_equal(core.undo(), wider)
    assert np.array_equal(core.undo(), before) and core.style == ORIGINAL and PAINTED not in core.styles
    with pytest.raises(UserError, match="nothing to undo"):
        core.undo()
    # Compared side by side: left half in one style, right half in the other, from the one frame.
    core.set_style("recolour")
    split = core.set_compare(ORIGINAL)
    left = np.arange(camera.width) < camera.width // 2
    assert np.array_equal(split[:, left], core.set_compare(None)[:, left])
    assert np.array_equal(split[:, ~left], before[:, ~left])
    assert core.set_compare(ORIGINAL) is not None and core.label == "target:recolour|original"


@pytest.mark.slow  # the session's trained run
def test_a_recoloured_style_is_fitted_when_saved_and_reports_how_close(run_copy):
    run = load_run(run_copy)
    use_renderer(run, "fast")
    split = load_split(run.dataset(Pairing("target", ORIGINAL)), "test")
    core = ViewerCore(run, style=ORIGINAL)
    core.render(split.poses[0], split.camera)
    features, hit = surface_features(core.frame.cache)
    centre = tuple(features[hit][0, :2].tolist())
    core.recolour(Recolour(centre, 0.3, (0.1, 0.2, 0.95)))
    shown = core.decoders[PAINTED]
    path = core.save_painted("blue")
    assert path == run_copy / "styles" / "blue.pt"
    loaded = load_run(run_copy)
    stored = loaded.stored["blue"]
    assert stored.origin == "painted" and [e["kind"] for e in stored.info["edits"]] == ["recolour"]
    saved = loaded.built.model.decoders["blue"]
    # The reported closeness is the saved decoder's, and the fit moved it most of the way from the base.
    reported = stored.info["fit"]
    assert reported["mean_error"] == pytest.approx(fit_error(saved, shown).mean, rel=1e-4)
    assert reported["mean_error"] < fit_error(run.built.model.decoders[ORIGINAL], shown).mean / 4
    assert reported["frame_psnr"] > 0
    result = run_cli("render", str(run_copy), "--pairing", "target:blue")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # the session's trained run
def test_a_read_only_viewer_refuses_to_save(run_copy):
    run = load_run(run_copy)
    core = ViewerCore(run, style=ORIGINAL, writable=False)
    core.recolour(Recolour((0.0, 0.0), 0.5, (0.0, 0.0, 1.0)))
    with pytest.raises(UserError, match="read-only"):
        core.save_painted("blue")
    assert not (run_copy / "styles").exists()


# --- in a real browser -----------------------------------------------------------------


@pytest.fixture(scope="session")
def distinct_run(tiny_data, tmp_path_factory):
    """The tiny analogy trained 4x longer than the session's run: long enough that its materials lie apart
    in the feature plane (after 300 steps the red sphere's features still overlap the yellow box's).

    Trained without the cover term (train.cover_weight = 0): with it, on this analogy, the box's features
    scatter across the plane (2026-12-05, issue 21), so that a click's falloff recolours only part of the
    box, speckled. That is a known cost of the default, noted in benchmarks/README.md; this test is about
    the click, the blend and Undo on materials that lie apart."""
    folder = tmp_path_factory.mktemp("distinct")
    config = tiny_config(tiny_data, folder / "runs", train={"steps": 1200, "cover_weight": 0.0})
    path = write_config(config, folder / "tiny.toml")
    result = run_cli("train", str(path), "--no-eval", "--no-render", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "runs" / "tiny"


VISIBLE = 30
"""A pixel visibly changed: by more than this many levels, R, G and B summed. The browser draws the view as
a textured quad placed anew at every draw, so one frame drawn twice can differ by a few levels (up to 15
seen, in SwiftShader); a material's change of colour moves its pixels by a hundred or more."""


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [H, W] bool
    return np.abs(a.astype(int) - b.astype(int)).sum(-1) > VISIBLE


def _steady(page: browser.Page, size: int) -> browser.Status:
    """Orbits the camera a little and waits for the sharp frame once it rests: the frame later pictures recompose.

    The browser reports its default camera before the one the viewer places, and a frame of each may
    come; after a drag of our own, no further report can replace the frame under the test's feet.
    """
    before = page.statuses()[-1]
    _, end = page.drag(6)
    return page.wait_status(lambda s: s.frame > before.frame and s.height == size and s.at > end, "a sharp frame after the drag")


def erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask without its border `pixels` wide (4-neighbour erosion)."""
    for _ in range(pixels):
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        inner[0], inner[-1], inner[:, 0], inner[:, -1] = False, False, False, False
        mask = inner
    return mask


@pytest.mark.slow
@pytest.mark.browser
def test_clicking_a_material_recolours_it_alone_in_chromium(distinct_run, tmp_path):
    """A click on the yellow box turns it the picker's blue in the next frame, the red sphere, the grey
    cylinder and the background stay; Undo brings the frame back."""
    _browser_or_skip()
    viewer = browser.Viewer(distinct_run, "--moving-size", "24", "--resting-size", "48")
    try:
        with browser.open_viewer(viewer.url()) as page:
            page.wait_status(lambda s: s.height == 48, "the sharp first frame")
            first = _steady(page, 48)
            assert first.style != PAINTED, f"orbiting the camera (a drag) recoloured: {first}"
            page.choose("Style", ORIGINAL)
            page.wait_status(lambda s: s.style == ORIGINAL and s.frame > first.frame, "the original style")
            before = _settled(page).astype(int)
            red, green, blue = before[..., 0], before[..., 1], before[..., 2]
            regions = {
                "yellow": erode((red > 150) & (green > 90) & (blue < 90), 10),
                "red": erode((red > 110) & (green < 60) & (blue < 60), 10),
                "grey": erode((np.abs(red - blue) < 25) & (red > 90) & (red < 215), 10),
                "background": erode(before.min(-1) > 245, 10),
            }
            for name, region in regions.items():
                assert region.sum() > 300, f"too little {name} on screen to judge: {region.sum()} px"
            rows, cols = regions["yellow"].nonzero()
            nearest = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
            y, x = int(rows[nearest]), int(cols[nearest])

            last = page.statuses()[-1].frame
            page.page.mouse.click(float(x), float(y + browser.SCENE_TOP))
            following = page.wait_status(lambda s: s.frame > last, "a frame after the click")
            assert following.style == PAINTED, f"the next frame is not the recolour: {following}"
            after = _settled(page, unlike=before.astype(np.uint8)).astype(int)
            page.save_screenshot(tmp_path / "recoloured.png")
            changed = _changed(after, before)
            window = (slice(y - 10, y + 11), slice(x - 10, x + 11))
            assert changed[window].all(), "the clicked material did not change around the click"
            assert (after[window][..., 2] > after[window][..., 0] + 40).all(), "the clicked material did not turn blue"
            for name in ("red", "background"):
                assert not changed[regions[name]].any(), f"the recolour changed the {name} material"
            stray = int(changed[regions["grey"]].sum())

            last = page.statuses()[-1].frame
            page.click("Undo")
            undone = page.wait_status(lambda s: s.frame > last, "a frame after Undo")
            assert undone.style == ORIGINAL
            assert not _changed(_settled(page, unlike=after.astype(np.uint8)), before).any(), "Undo did not restore the frame"
    finally:
        status = viewer.stop()
    assert status == 143, viewer.output
    if stray:
        # Known since decoders read the normal with the saturation penalty (2026-12-07, issue 21): the box's
        # features settle at the plane's centre, which the grey cylinder's front-layer samples cross on their
        # way into its surface, so a click on the box moves some grey pixels too (benchmarks/README.md).
        pytest.xfail(f"the recolour changed {stray} of {int(regions['grey'].sum())} grey pixels (the known stray)")


@pytest.mark.slow
@pytest.mark.browser
def test_a_split_view_and_a_read_only_viewer_in_chromium(run_copy):
    """Served on 0.0.0.0 the viewer says it is read-only and its Save is disabled; 'Compare with' shows
    the current style in the left half of the view and the chosen one in the right half."""
    _browser_or_skip()
    viewer = browser.Viewer(run_copy, "--moving-size", "24", "--resting-size", "48", "--host", "0.0.0.0")
    try:
        url = viewer.url().replace("0.0.0.0", "127.0.0.1")
        for _ in range(100):  # the line after the URL
            if any("read-only" in line and "--allow-writes" in line for line in viewer.lines):
                break
            time.sleep(browser.POLL)
        else:
            raise AssertionError(f"no read-only line at start:\n{viewer.output}")
        with browser.open_viewer(url) as page:
            page.wait_status(lambda s: s.height == 48 and s.style == "recolour", "the sharp first frame")
            first = _steady(page, 48)
            assert page.page.get_by_role("button", name="Save style", exact=True).is_disabled()
            assert page.page.get_by_text("read-only", exact=False).count() > 0

            # Each picture below is the one frame recomposed (no march in between), so that the halves can be
            # compared pixel for pixel.
            page.choose("Style", ORIGINAL)
            swapped = page.wait_status(lambda s: s.style == ORIGINAL and s.frame > first.frame, "the original style")
            original = _settled(page)
            page.choose("Style", "recolour")
            shown = page.wait_status(lambda s: s.style == "recolour" and s.frame > swapped.frame, "the recolour again")
            recolour = _settled(page, unlike=original)
            page.choose("Compare with", ORIGINAL)
            split = page.wait_status(lambda s: s.compare == ORIGINAL and s.frame > shown.frame, "the split view")
            assert (split.style, split.compare) == ("recolour", ORIGINAL)
            both = _settled(page, unlike=recolour)
            # The frame's middle column lies at the middle of the page (the view fills it, under the panel too);
            # the browser blends neighbouring frame pixels, so a band two frame pixels wide each side is left out.
            middle = browser.VIEWPORT["width"] * (split.width // 2) / split.width
            band = 2 * browser.VIEWPORT["width"] / split.width
            columns = np.arange(both.shape[1])
            left, right = columns < middle - band, columns > middle + band
            styles_differ = _changed(recolour, original)
            assert styles_differ[:, left].mean() > 0.01 and styles_differ[:, right].mean() > 0.01
            assert not _changed(both, recolour)[:, left].any(), "the left half is not the current style"
            assert not _changed(both, original)[:, right].any(), "the right half is not the compared style"
    finally:
        status = viewer.stop()
    assert status == 143, viewer.output
    assert not (run_copy / "styles").exists()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(("signum", "status", "line"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_the_viewer_stops_cleanly_while_it_renders(run_copy, signum, status, line):
    """A stop while a frame renders waits for it: the exit status of the signal and one line, no abort.

    The exact renderer at 96 px takes long enough per frame that the signal lands during one.
    """
    _browser_or_skip()
    viewer = browser.Viewer(run_copy, "--moving-size", "96", "--resting-size", "96", "--renderer", "exact")
    stopped = None
    try:
        with browser.open_viewer(viewer.url()) as page:
            first = page.wait_status(lambda s: s.height == 96, "the first frame")
            mouse = page.page.mouse
            x, y = (browser.VIEWPORT["width"] - browser.PANEL_WIDTH) / 2, browser.VIEWPORT["height"] / 2
            mouse.move(x, y)
            mouse.down()
            for move in range(1, 400):  # orbit until a frame of the motion has come, and one more is under way
                mouse.move(x + 3 * (move % 60), y)
                page.page.wait_for_timeout(20)
                if any(s.frame > first.frame for s in page.statuses()):
                    break
            else:
                raise AssertionError("no frame while the camera moved")
            mouse.move(x + 200, y)
            stopped = viewer.stop(signum=signum)
    finally:
        if stopped is None:
            viewer.stop()
    assert stopped == status, viewer.output
    after = viewer.lines_after_url()
    assert after == [f"viewer stopped: {line} ({'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C'})"], viewer.output
