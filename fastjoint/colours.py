"""Colour and background names as a config holds them, below the config: parsing and resolving.

A dataset's background is one of
- a colour (`white`, `black`, `#rrggbb`), composited behind every ray;
- `random`: a fresh random colour per training ray, so that the scene's opacity is learned
  from RGBA images (renders and evaluation then use `render.background`);
- `learned`: an environment map of the ray's direction (fastjoint.render.background), for
  opaque photographs;
- `auto`: `learned` for opaque images, `random` for images with transparency (an alpha
  below 255 somewhere: RGBA images whose alpha is 255 everywhere are opaque photographs).
"""

from __future__ import annotations

import re
from typing import Union

from fastjoint.errors import UserError

AUTO = "auto"
RANDOM = "random"
LEARNED = "learned"
NAMED_COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
CHOICES = f'"{AUTO}", "{RANDOM}", "{LEARNED}", "white", "black" or "#rrggbb"'

Colour = tuple[float, float, float]
Background = Union[str, Colour]  # resolved: RANDOM, LEARNED or a colour


def parse_colour(text: str, key: str) -> Colour:
    """`white`, `black` or `#rrggbb` as an RGB triple in [0, 1]; a UserError naming `key` otherwise."""
    if text in NAMED_COLOURS:
        return NAMED_COLOURS[text]
    if HEX_COLOUR.fullmatch(text):
        return tuple(int(text[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
    raise UserError(f'{key}: expected "white", "black" or "#rrggbb", got {text!r}')


def parse_background(text: str, key: str) -> Background:
    """A background setting as a config holds it: `auto`, `random`, `learned` or a colour."""
    if text in (AUTO, RANDOM, LEARNED):
        return text
    try:
        return parse_colour(text, key)
    except UserError:
        raise UserError(f"{key}: expected {CHOICES}, got {text!r}") from None


def resolve_background(text: str, key: str, transparent: bool, random_for_transparent: bool, fallback: Colour) -> Background:
    """What a dataset's setting means for its images: `auto` becomes `random` or `learned`.

    Args:
        text: the setting (see `parse_background`).
        key: its config key, for messages.
        transparent: whether the dataset's images have transparency (an alpha below 255
            somewhere; RGBA images opaque everywhere are opaque photographs).
        random_for_transparent: `train.random_background`: whether `auto` picks `random` for transparent
            images (else `fallback`, the colour they were composited on before).
        fallback: `render.background`.
    """
    choice = parse_background(text, key)
    if choice != AUTO:
        return choice
    if not transparent:
        return LEARNED
    return RANDOM if random_for_transparent else fallback


def to_json(background: Background) -> str | list[float]:
    """A resolved background as a checkpoint stores it."""
    return background if isinstance(background, str) else list(background)


def from_json(value: str | list[float]) -> Background:
    return value if isinstance(value, str) else tuple(float(v) for v in value)  # type: ignore[return-value]
