"""The analogy fit: each desired style's decoder fitted again after the joint training, so that the
target's surface takes the change of colour the reference shows where it looks most alike.

The joint training leaves a desired style's decoder right where the reference's features lie and
guessing elsewhere: which of the target's features land off the reference's depends on the seed
(benchmarks/README.md, "A transfer that does not depend on the seed"). The analogy fit reads the
style's change where it was trained, on the reference, and hands it to the target by likeness:

- **Examples** (`reference_examples`): the reference's visible pixels (opacity past
  `plane.OPAQUE`) in `plane.VIEWS` of its training views, up to `coverage.RAYS_PER_VIEW` each, each
  pixel's decoder inputs averaged over its samples with their compositing weights
  (`coverage.pixel_features`); at most `EXAMPLES` of them, drawn with a fixed generator. Each
  has a key (`keys`: its colour under the original decoder over `COLOUR_SCALE`, its normal over
  `NORMAL_SCALE` where the decoders read one, its feature over `FEATURE_SCALE`) and a change:
  the style's decoder minus the original's at its inputs.
- **The borrowed change** (`borrowed_change`): at any decoder input, the mean of the examples'
  changes weighted by exp(-|key - example key|^2 / 2). A target surface the reference never
  shows under that feature still finds the reference's surfaces of its colour and facing.
- **The fit** (`fit_decoder`): a copy of the style's decoder trained `train.analogy_steps` steps
  of Adam on the samples of both scenes' training views (as the examples are drawn), each
  weighted by its compositing weight: the target's toward the original decoder's colour plus
  the borrowed change, the reference's toward the style decoder's own colour (so that the
  reference keeps its fit). It then replaces the style's decoder.

`train` runs it once the joint training has reached `train.steps` (a resumed run that has not
run it yet does), `restyle` on the decoder it fits. On the kit's 64 px scenes it takes 7 to 11 s of
one CPU core with the other core busy: about a third each marching both scenes' views, borrowing the
change and the steps (benchmarks/README.md, "The analogy fit").
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fastjoint.coverage import pixel_features, view_caches
from fastjoint.data import Split
from fastjoint.pairing import ORIGINAL
from fastjoint.plane import OPAQUE

COLOUR_SCALE = 0.05  # colours this far apart (in [0, 1] per channel) weigh exp(-1/2) of alike ones
NORMAL_SCALE = 0.15  # the same for normals (unit vectors)
FEATURE_SCALE = 0.1  # the same for style features
EXAMPLES = 6000  # the reference's pixels the change is borrowed from
BATCH = 8192  # samples per fitting step
LR = 3e-3  # Adam's learning rate; x0.3 at half and at four fifths of the steps
CHUNK = 256  # samples whose change is borrowed at once


class Examples(NamedTuple):
    """The reference's pixels a style's change is borrowed from."""

    keys: Tensor  # [K, key size]
    changes: Tensor  # [K, 3] the style's colour minus the original's


def keys(inputs: Tensor, colours: Tensor, feature_dim: int) -> Tensor:  # [N, decoder inputs], [N, 3] -> [N, key size]
    """Where a decoder input sits for the analogy: its original colour, its normal (when the decoders read one) and its
    style feature, each over its scale."""
    parts = [colours / COLOUR_SCALE]
    if inputs.shape[1] > feature_dim:
        parts.append(inputs[:, feature_dim:] / NORMAL_SCALE)
    parts.append(inputs[:, :feature_dim] / FEATURE_SCALE)
    return torch.cat(parts, dim=1)


def borrowed_change(query: Tensor, examples: Examples) -> Tensor:  # [N, key size] -> [N, 3]
    """The examples' changes averaged with weights exp(-|query - key|^2 / 2).

    As softmax(query . key - |key|^2 / 2): the |query|^2 term is the same for every example, so one matrix product per
    chunk gives the logits (four times faster than the distances themselves on one CPU core; chunks of CHUNK queries
    keep them in cache)."""
    out = torch.empty(query.shape[0], 3, dtype=examples.changes.dtype, device=query.device)
    half_squared = -0.5 * examples.keys.square().sum(dim=1)
    transposed = examples.keys.t().contiguous()
    for start in range(0, query.shape[0], CHUNK):
        logits = torch.addmm(half_squared, query[start : start + CHUNK], transposed)
        out[start : start + CHUNK] = torch.softmax(logits, dim=1) @ examples.changes
    return out


class Samples(NamedTuple):
    """Cached samples of a scene's training views: what the decoders read there, and how much each counts."""

    inputs: Tensor  # [S, decoder inputs]
    weights: Tensor  # [S] compositing weights
    pixels: Tensor  # [P, decoder inputs] the visible pixels' inputs (opacity past OPAQUE), weight-averaged


@torch.no_grad()
def scene_samples(cache_samples: Callable, split: Split, generator: torch.Generator, device: torch.device) -> Samples:
    """The samples of `coverage.view_caches`: up to coverage.RAYS_PER_VIEW random pixels of each of `plane.VIEWS` of `split`'s views.

    `cache_samples(rays_o, rays_d)` marches a scene's rays (`Built.cache_samples` of that scene).
    """
    inputs, weights, pixels = [], [], []
    for cache in view_caches(cache_samples, split, generator, device):
        opacity, averaged = pixel_features(cache)
        inputs.append(cache.features)
        weights.append(cache.weights)
        pixels.append(averaged[opacity > OPAQUE])
    return Samples(torch.cat(inputs), torch.cat(weights), torch.cat(pixels))


@torch.no_grad()
def reference_examples(reference: Samples, original: nn.Module, style: nn.Module, feature_dim: int, generator: torch.Generator) -> Examples:
    """A style's examples: up to EXAMPLES of the reference's visible pixels, their keys and the style's change there."""
    pixels = reference.pixels
    if pixels.shape[0] > EXAMPLES:
        pixels = pixels[torch.randperm(pixels.shape[0], generator=generator)[:EXAMPLES].to(pixels.device)]
    colours = original(pixels).clamp(0, 1)
    return Examples(keys(pixels, colours, feature_dim), style(pixels).clamp(0, 1) - colours)


def fit_decoder(
    original: nn.Module,
    style: nn.Module,
    target: Samples,
    reference: Samples,
    feature_dim: int,
    steps: int,
    generator: torch.Generator,
    progress: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """A copy of the `style` decoder fitted to the analogy (the module docstring): a new module; `style` is untouched."""
    examples = reference_examples(reference, original, style, feature_dim, generator)
    with torch.no_grad():
        colours = original(target.inputs).clamp(0, 1)
        wanted = torch.cat(
            [
                (colours + borrowed_change(keys(target.inputs, colours, feature_dim), examples)).clamp(0, 1),
                style(reference.inputs).clamp(0, 1),
            ]
        )
    inputs = torch.cat([target.inputs, reference.inputs])
    weights = torch.cat([target.weights, reference.weights])
    weights = weights / weights.mean().clamp(min=1e-12)
    fitted = copy.deepcopy(style)
    fitted.train(True)
    optimizer = torch.optim.Adam(fitted.parameters(), lr=LR)
    decays = {steps // 2, (steps * 4) // 5}
    with torch.enable_grad():
        for step in range(steps):
            if step in decays:
                for group in optimizer.param_groups:
                    group["lr"] *= 0.3
            batch = torch.randint(inputs.shape[0], (min(BATCH, inputs.shape[0]),), generator=generator).to(inputs.device)
            loss = (weights[batch, None] * (fitted(inputs[batch]) - wanted[batch]).square()).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(step + 1, steps)
    fitted.train(False)
    return fitted


@torch.no_grad()
def both_scenes(built, originals: dict[str, Split], generator: torch.Generator) -> dict[str, Samples] | None:
    """The samples of both scenes' training views (`scene_samples`), or None when either shows no surface yet."""
    samples = {
        scene: scene_samples(lambda o, d, scene=scene: built.cache_samples(scene, o, d), originals[scene], generator, built.device)
        for scene in ("target", "reference")
    }
    if samples["reference"].pixels.shape[0] == 0 or samples["target"].inputs.shape[0] == 0:
        return None
    return samples


def fit_styles(
    built,  # fastjoint.run.Built
    decoders: dict[str, nn.Module],  # style -> its decoder (the model's, or restyle's new one)
    originals: dict[str, Split],  # scene -> its original-style training split
    steps: int,
    seed: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> bool:
    """Fits every decoder of `decoders` to the analogy, then replaces each one's weights (in place).

    False, with the decoders as they were, when there is nothing to fit: no steps, no decoder, or no surface of
    the reference (or of the target) seen in the training views (a run stopped before it has one)."""
    if steps <= 0 or not decoders:
        return False
    generator = torch.Generator().manual_seed(seed)
    samples = both_scenes(built, originals, generator)
    if samples is None:
        return False
    model = built.model
    fitted = {}
    for style, decoder in decoders.items():

        def report(done: int, total: int, style: str = style) -> None:
            if progress is not None:
                progress(style, done, total)

        fitted[style] = fit_decoder(
            model.decoders[ORIGINAL], decoder, samples["target"], samples["reference"], model.feature_dim, steps, generator, report
        )
    for style, decoder in fitted.items():  # all at once: a fit stopped half-way changes nothing
        decoders[style].load_state_dict(decoder.state_dict())
    return True
