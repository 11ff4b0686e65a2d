"""The analogy fit: each desired decoder fitted again so that the target takes the reference's change where they look alike."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from conftest import run_cli, tiny_config, write_config
from fastjoint.analogy import CHUNK, COLOUR_SCALE, FEATURE_SCALE, NORMAL_SCALE, Examples, Samples, borrowed_change, fit_decoder, keys
from fastjoint.config import load_config
from fastjoint.errors import UserError
from fastjoint.model.decoder import StyleDecoder


def test_keys_scale_the_colour_the_normal_and_the_feature():
    inputs = torch.tensor([[0.5, -0.5, 0.0, 0.0, 1.0]])  # feature (2), then the normal (3)
    colours = torch.tensor([[0.2, 0.4, 0.6]])
    expected = torch.cat([colours / COLOUR_SCALE, inputs[:, 2:] / NORMAL_SCALE, inputs[:, :2] / FEATURE_SCALE], dim=1)
    assert torch.allclose(keys(inputs, colours, 2), expected)
    # Decoders that read the feature alone: no normal in the key.
    assert torch.allclose(keys(inputs[:, :2], colours, 2), torch.cat([colours / COLOUR_SCALE, inputs[:, :2] / FEATURE_SCALE], dim=1))


def test_the_borrowed_change_is_the_nearest_examples_and_their_kernel_mean_between():
    examples = Examples(
        keys=torch.tensor([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0]]),
        changes=torch.tensor([[0.5, 0.0, -0.5], [0.3, 0.0, -0.3], [0.0, 1.0, 0.0]]),
    )
    near_first = borrowed_change(torch.tensor([[0.5, 0.0]]), examples)
    assert torch.allclose(near_first, torch.tensor([[0.4, 0.0, -0.4]]), atol=1e-6)  # the two alike examples' mean
    near_last = borrowed_change(torch.tensor([[99.0, 0.0]]), examples)
    assert torch.allclose(near_last, torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6)
    # Half way, one unit from each side: weights exp(-1/2) each, so the three changes' mean.
    middle = borrowed_change(torch.tensor([[50.0, 0.0]]), Examples(torch.tensor([[49.0, 0.0], [51.0, 0.0]]), examples.changes[1:]))
    assert torch.allclose(middle, examples.changes[1:].mean(dim=0, keepdim=True), atol=1e-6)


def test_the_borrowed_change_matches_its_definition_across_chunks():
    """The product form (softmax of query . key - |key|^2 / 2) against the kernel on the distances themselves, in float64,
    with keys as far apart as the kit's (colours over COLOUR_SCALE reach 20) and queries spanning several chunks."""
    generator = torch.Generator().manual_seed(0)
    examples = Examples(torch.rand(500, 8, generator=generator) * 20, torch.rand(500, 3, generator=generator) - 0.5)
    query = examples.keys[torch.randint(500, (3 * CHUNK + 7,), generator=generator)] + torch.randn(3 * CHUNK + 7, 8, generator=generator)
    weights = torch.softmax(-0.5 * torch.cdist(query.double(), examples.keys.double()).square(), dim=1)
    assert torch.allclose(borrowed_change(query, examples).double(), weights @ examples.changes.double(), atol=1e-5)


class Colour(nn.Module):
    """A decoder whose colour is a fixed function of its inputs: the original style, say."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, inputs):
        return self.fn(inputs)


def test_the_fit_gives_the_target_the_reference_change_of_its_colour_where_the_style_never_trained():
    """The reference shows a yellow and a red material at features (-0.5, +-0.3); the style turns yellow blue.
    The target's yellow lies at features near (+0.5, -0.3), where the style's decoder never trained: fitted to
    the analogy, the decoder turns the target's yellow blue there and leaves its red red, and keeps the
    reference's colours."""
    torch.manual_seed(0)
    yellow, red, blue = torch.tensor([0.9, 0.7, 0.1]), torch.tensor([0.8, 0.1, 0.1]), torch.tensor([0.1, 0.3, 0.9])

    def material(features):  # the lower left of the plane (x < 0.2, y < 0): red; elsewhere yellow
        is_red = (features[:, 1] < 0) & (features[:, 0] < 0.2)
        return torch.where(is_red[:, None], red, yellow)

    original = Colour(lambda inputs: material(inputs[:, :2]))

    def reference_inputs(n):
        x = torch.rand(n, 2) * 0.2 - 0.1 + torch.tensor([-0.5, 0.0])
        x[: n // 2, 1] += 0.3  # yellow
        x[n // 2 :, 1] -= 0.3  # red
        return x

    def target_inputs(n):
        x = reference_inputs(n)
        x[: n // 2] += torch.tensor([1.0, -0.6])  # the target's yellow beside the reference's red, where the style never trained
        return x

    ref, tgt = reference_inputs(2000), target_inputs(2000)
    truth_style = lambda inputs: torch.where((material(inputs[:, :2]) == yellow).all(dim=1)[:, None], blue, material(inputs[:, :2]))  # noqa: E731
    style = StyleDecoder(2, 32)  # the joint training's decoder: fitted to the reference only
    optimizer = torch.optim.Adam(style.parameters(), lr=1e-2)
    for _ in range(300):
        loss = (style(ref) - truth_style(ref)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    target_yellow = tgt[:1000]
    before = (style(target_yellow) - blue).abs().mean().item()

    samples = lambda x: Samples(x, torch.ones(len(x)), x)  # noqa: E731
    fitted = fit_decoder(original, style, samples(tgt), samples(ref), 2, 600, torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = (fitted(target_yellow) - blue).abs().mean().item()
        target_red = (fitted(tgt[1000:]) - red).abs().mean().item()
        reference = (fitted(ref) - truth_style(ref)).abs().mean().item()
    assert before > 0.2, f"the case needs a style that gets the target's yellow wrong ({before:.3f})"
    assert after < 0.05, f"the target's yellow should turn blue: mean error {after:.3f} (before the fit {before:.3f})"
    assert target_red < 0.05 and reference < 0.05, (target_red, reference)
    assert fitted is not style and not torch.equal(fitted.net[0].weight, style.net[0].weight)


def test_the_analogy_steps_are_checked_in_one_line(tiny_data, tmp_path):
    text = write_config(tiny_config(tiny_data, tmp_path), tmp_path / "c.toml").read_text()
    changed, count = re.subn(r"^analogy_steps = .*$", "analogy_steps = -1", text, flags=re.MULTILINE)
    assert count == 1
    path = tmp_path / "bad.toml"
    path.write_text(changed)
    with pytest.raises(UserError, match=r"train.analogy_steps'?:? must not be negative"):
        load_config(path)


@pytest.mark.slow
def test_train_fits_the_styles_once_at_the_end_and_a_resumed_run_fits_them_if_it_had_not(tiny_data, tmp_path):
    """A run trained with the fit off records that it has not run; resumed with it on, the finished run only fits
    the desired decoders (the step, the scene and the original decoder unchanged) and records it; resumed again,
    nothing changes. A run trained with it on from the start ends where the resumed one did."""
    off = tiny_config(tiny_data, tmp_path / "runs", name="off", train={"steps": 200, "checkpoint_every": 100, "analogy_steps": 0})
    on = tiny_config(tiny_data, tmp_path / "runs", name="off", train={"steps": 200, "checkpoint_every": 100, "analogy_steps": 200})
    args = ("--no-eval", "--no-render", "--orbit", "0")
    trained = run_cli("train", str(write_config(off, tmp_path / "off.toml")), *args, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    checkpoint = off.run_dir / "checkpoints" / "latest.pt"
    before = torch.load(checkpoint, weights_only=True)
    assert before["step"] == 200 and before["analogy_fitted"] is False and "analogy fit" not in trained.stdout + trained.stderr

    resumed = run_cli("train", str(write_config(on, tmp_path / "on.toml")), *args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    said = resumed.stdout + resumed.stderr
    assert re.search(r"^analogy fit: recolour \(200 steps each\) in [\d.]+ s$", said, re.MULTILINE), said
    after = torch.load(checkpoint, weights_only=True)
    assert after["step"] == 200 and after["analogy_fitted"] is True
    changed = {key for key, value in before["model"].items() if not torch.equal(after["model"][key], value)}
    assert changed and all(key.startswith("decoders.recolour.") for key in changed), sorted(changed)

    again = run_cli("train", str(tmp_path / "on.toml"), *args, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "analogy fit" not in again.stdout + again.stderr
    final = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(final["model"][key], value) for key, value in after["model"].items())

    straight = tiny_config(tiny_data, tmp_path / "runs", name="on", train={"steps": 200, "checkpoint_every": 100, "analogy_steps": 200})
    direct = run_cli("train", str(write_config(straight, tmp_path / "straight.toml")), *args, cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr
    model = torch.load(straight.run_dir / "checkpoints" / "latest.pt", weights_only=True)["model"]
    assert all(torch.equal(model[key], value) for key, value in after["model"].items())
