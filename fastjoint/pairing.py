"""Scenes, styles and pairings: the names every part of fastjoint uses.

A pairing `scene:style` renders a scene's encoder through a style's decoder. Three are
trained; `target:desired` is the transfer, for which no training images exist.
"""

from typing import NamedTuple

from fastjoint.errors import UserError

SCENES = ("target", "reference")
STYLES = ("original", "desired")


class Pairing(NamedTuple):
    scene: str
    style: str

    @property
    def name(self) -> str:
        """The pairing as users write it, e.g. `target:desired`."""
        return f"{self.scene}:{self.style}"

    @property
    def slug(self) -> str:
        """The pairing as a file or folder name, e.g. `target_desired`."""
        return f"{self.scene}_{self.style}"

    @property
    def data_key(self) -> str:
        """The `data.*` config key that holds this pairing's dataset."""
        return self.slug


TRAINED = (
    Pairing("target", "original"),
    Pairing("reference", "original"),
    Pairing("reference", "desired"),
)
TRANSFER = Pairing("target", "desired")
ALL = TRAINED + (TRANSFER,)


def parse_pairing(text: str) -> Pairing:
    """Parses `scene:style`; raises UserError naming the bad part."""
    for pairing in ALL:
        if pairing.name == text:
            return pairing
    names = ", ".join(p.name for p in ALL)
    raise UserError(f"--pairing: unknown pairing '{text}' (choose one of {names})")
