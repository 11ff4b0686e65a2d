"""Scenes, styles and pairings: the names every part of fastjoint uses.

The two scenes are fixed by the method (A : A' :: B : B'); the styles are data: `original`
and the desired styles a config names under `[data.styles.<name>]`. A pairing
`scene:style` renders a scene's encoder through a style's decoder. `target:original`,
`reference:original` and `reference:<style>` are trained; `target:<style>` is a transfer,
for which no training images exist.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from fastjoint.errors import UserError

SCENES = ("target", "reference")
ORIGINAL = "original"
STYLE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


class Pairing(NamedTuple):
    scene: str
    style: str

    @property
    def name(self) -> str:
        """The pairing as users write it, e.g. `target:recolour`."""
        return f"{self.scene}:{self.style}"

    @property
    def slug(self) -> str:
        """The pairing as a file or folder name, e.g. `target_recolour`."""
        return f"{self.scene}_{self.style}"


class Pairings(NamedTuple):
    """The pairings of a run with these desired styles."""

    desired: tuple[str, ...]  # the desired styles, in the config's order
    painted: tuple[str, ...] = ()  # styles with a decoder but no photos (painted in the viewer)

    @property
    def styles(self) -> tuple[str, ...]:
        """Every style with a decoder: `original` first."""
        return (ORIGINAL, *self.desired, *self.painted)

    @property
    def trained(self) -> tuple[Pairing, ...]:
        """target:original, reference:original, then reference:<style> per desired style."""
        return (Pairing("target", ORIGINAL), Pairing("reference", ORIGINAL)) + tuple(Pairing("reference", style) for style in self.desired)

    @property
    def transfers(self) -> tuple[Pairing, ...]:
        """target:<style> per desired (then painted) style."""
        return tuple(Pairing("target", style) for style in (*self.desired, *self.painted))

    @property
    def all(self) -> tuple[Pairing, ...]:
        return self.trained + self.transfers

    def parse(self, text: str, key: str = "--pairing") -> Pairing:
        """Parses `scene:style`; raises UserError naming the pairings this run has."""
        for pairing in self.all:
            if pairing.name == text:
                return pairing
        names = ", ".join(p.name for p in self.all)
        raise UserError(f"{key}: unknown pairing '{text}' (this run has {names})")


def check_style_name(name: str, key: str) -> None:
    """A style name is a lower-case word usable as a file name, and not `original`."""
    if not STYLE_NAME.fullmatch(name):
        raise UserError(f"{key}: style names are lower-case letters, digits, '-' and '_', got '{name}'")
    if name == ORIGINAL:
        raise UserError(f"{key}: '{ORIGINAL}' is the scenes' own style; name the desired style otherwise")
