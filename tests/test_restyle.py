"""`fastjoint restyle`, stored styles and the sample cache they rest on."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import pytest
import torch
from test_cli import assert_one_line_error

from conftest import run_cli
from fastjoint.pairing import Pairing
from fastjoint.render import cache_samples, composite_cached, concat_caches, render_rays, select_rays, uniform_sampler
from fastjoint.run import load_run


def _random_field(seed: int):
    """A smooth random field: density and a 2-D feature from fixed random projections."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(3, 1, generator=g), torch.randn(6, 2, generator=g)

    def features(points, dirs):
        sigma = torch.nn.functional.softplus(points @ a)[:, 0] * 2.0
        return sigma, torch.tanh(torch.cat([points, dirs], dim=-1) @ b)

    return features


def test_cached_samples_composite_as_a_full_render():
    """Decoding the cache reproduces render_rays with the same decoder; selecting rays keeps each ray's colour."""
    field = _random_field(int(torch.randint(1000, ())))
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Sigmoid())
    sampler = uniform_sampler(2.0, 6.0, 48)
    rays_o = torch.randn(37, 3) * 0.1 + torch.tensor([0.0, 0.0, -4.0])
    rays_d = torch.nn.functional.normalize(torch.randn(37, 3) * 0.2 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    background = torch.rand(3)

    def full(points, dirs):
        sigma, feature = field(points, dirs)
        return sigma, decoder(feature)

    expected = render_rays(full, sampler, rays_o, rays_d, background).rgb
    cache = concat_caches([cache_samples(field, sampler, o, d) for o, d in zip(rays_o.split(10), rays_d.split(10), strict=True)])
    assert cache.n_rays == 37 and cache.n_samples < 37 * 48  # negligible samples were dropped
    with torch.no_grad():
        got = composite_cached(cache, decoder(cache.features), background)
    torch.testing.assert_close(got, expected, atol=48 * 1e-4, rtol=0)
    rays = torch.randperm(37)[:11]
    part = select_rays(cache, rays)
    with torch.no_grad():
        torch.testing.assert_close(composite_cached(part, decoder(part.features), background), got[rays])


@pytest.mark.slow
def test_restyle_adds_a_style_that_transfers(run_copy, tiny_data):
    checkpoint = run_copy / "checkpoints" / "latest.pt"
    before = checkpoint.read_bytes()
    reference, truth = tiny_data / "reference" / "recolour", tiny_data / "target" / "recolour"
    result = run_cli("restyle", str(run_copy), "blue", str(reference), "--target-truth", str(truth))
    assert result.returncode == 0, result.stderr
    assert checkpoint.read_bytes() == before  # the trained model is never rewritten
    style_file = run_copy / "styles" / "blue.pt"
    stored = torch.load(style_file, weights_only=True)
    assert stored["reference"] == str(reference.resolve()) and stored["info"]["steps"] == 200
    assert stored["info"]["analogy_steps"] == load_run(run_copy).config.train.analogy_steps > 0  # fitted to the analogy, as train's
    transfer = stored["info"]["transfer"]
    assert "transfer target:blue" in result.stdout

    # The jointly trained decoder of the same style, scored the same way, is the yardstick.
    joint = json.loads((run_copy / "eval.json").read_text())["transfers"]["target:recolour"]
    assert transfer["baseline_psnr"] == pytest.approx(joint["baseline_psnr"])
    assert transfer["gain_db"] > 3.0, transfer
    assert transfer["psnr"] > joint["psnr"] - 2.0, (transfer, joint)
    renders = run_copy / "renders" / "target_blue"
    assert sorted(p.name for p in renders.glob("*.png")) == ["test_000.png", "test_001.png", "test_002.png"]
    blue = iio.imread(renders / "test_000.png").astype(float)
    original = iio.imread(run_copy / "renders" / "target_recolour" / "test_000.png").astype(float)
    assert abs(blue - original).mean() < 12.0  # blue was fitted to the recolour photos

    # eval, render and analyze see the stored style.
    assert run_cli("eval", str(run_copy)).returncode == 0
    scores = json.loads((run_copy / "eval.json").read_text())
    assert "target:blue" in scores["transfers"] and "reference:blue" in scores["pairings"]
    assert scores["transfers"]["target:blue"]["psnr"] == pytest.approx(transfer["psnr"], abs=1e-6)
    rendered = run_cli("render", str(run_copy), "--pairing", "target:blue", "--split", "val")
    assert rendered.returncode == 0, rendered.stderr
    assert run_cli("analyze", str(run_copy)).returncode == 0
    assert iio.imread(run_copy / "analysis" / "decoders.png").shape[1] > 3 * 256  # original, recolour, blue

    # A name taken is refused; --force replaces; deleting the file removes the style.
    assert_one_line_error(run_cli("restyle", str(run_copy), "blue", str(reference)), "STYLE: 'blue' is already a style", "--force")
    assert_one_line_error(run_cli("restyle", str(run_copy), "recolour", str(reference)), "'recolour' is already a style")
    again = run_cli("restyle", str(run_copy), "blue", str(reference), "--force", "--steps", "5", "--analogy-steps", "0", "--no-render")
    assert again.returncode == 0, again.stderr
    assert torch.load(style_file, weights_only=True)["info"]["steps"] == 5
    assert torch.load(style_file, weights_only=True)["info"]["analogy_steps"] == 0
    style_file.unlink()
    run = load_run(run_copy)
    assert "blue" not in run.pairings.styles and "blue" not in run.built.model.decoders
    assert_one_line_error(run_cli("render", str(run_copy), "--pairing", "target:blue"), "unknown pairing 'target:blue'")


@pytest.mark.slow  # the session's trained run, and the CLI
def test_stored_style_decoder_is_the_one_rendered(run_copy):
    """A stored style's decoder is loaded as saved, and renders as that decoder."""
    from fastjoint.styles import StoredStyle, save_style

    run = load_run(run_copy)
    decoder = run.built.model.new_decoder()
    save_style(run_copy, StoredStyle("painted", decoder.state_dict(), origin="painted"))
    loaded = load_run(run_copy)
    assert loaded.pairings.styles[-1] == "painted" and Pairing("target", "painted") in loaded.pairings.transfers
    assert Pairing("reference", "painted") not in loaded.pairings.trained  # no photos: never trained
    for name, value in decoder.state_dict().items():
        torch.testing.assert_close(loaded.built.model.decoders["painted"].state_dict()[name], value)
    assert loaded.dataset(Pairing("target", "painted")) is None
    result = run_cli("eval", str(run_copy))
    assert result.returncode == 0, result.stderr
    assert json.loads((run_copy / "eval.json").read_text())["untested"] == ["target:painted"]


def _fewer_test_views(dataset, copy):
    """A copy of a dataset whose test split lacks its last view."""
    shutil.copytree(dataset, copy)
    meta = json.loads((copy / "transforms_test.json").read_text())
    meta["frames"] = meta["frames"][:-1]
    (copy / "transforms_test.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.slow  # the session's trained run, and the CLI
@pytest.mark.parametrize(
    "args, fragments",
    [
        (["Blue", "{reference}"], ["STYLE: style names are lower-case"]),
        (["original", "{reference}"], ["STYLE: 'original' is the scenes' own style"]),
        (["blue", "{missing}"], ["nowhere: dataset folder not found"]),
        (["blue", "{reference}", "--target-truth", "{wrong_truth}"], ["its test views differ"]),
        (["blue", "{reference}", "--steps", "0"], ["--steps: must be at least 1"]),
        (["blue", "{reference}", "--analogy-steps", "-1"], ["--analogy-steps: must not be negative"]),
    ],
)
def test_restyle_mistakes(run_copy, tiny_data, tmp_path, args, fragments):
    paths = {
        "reference": tiny_data / "reference" / "recolour",
        "missing": tmp_path / "nowhere",
        "wrong_truth": _fewer_test_views(tiny_data / "target" / "recolour", tmp_path / "truth"),
    }
    filled = [a.format(**paths) for a in args]
    assert_one_line_error(run_cli("restyle", str(run_copy), *filled), *fragments)
    assert not (run_copy / "styles").exists()


@pytest.mark.slow  # the session's trained run, and the CLI
def test_a_broken_style_file_is_named(run_copy):
    (run_copy / "styles").mkdir()
    (run_copy / "styles" / "junk.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(run_cli("eval", str(run_copy)), "styles/junk.pt: cannot read style file", "delete it")
