"""A run's styles: those its config trained, and those added later in RUN/styles/<name>.pt.

`restyle` and the viewer add a style to a trained run without touching its checkpoint: a
style file holds one decoder and where it came from. Deleting the file removes the style.
`run_styles` is the one place that says which styles a run has; `load_run` applies it, so
`eval`, `render`, `analyze` and the viewer all see stored styles as the config's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastjoint.config import Config, StyleData
from fastjoint.errors import UserError
from fastjoint.files import atomic_write
from fastjoint.pairing import STYLE_NAME, Pairings, check_style_name

STYLES_FOLDER = "styles"
FORMAT = "fastjoint-style"
VERSION = 1


@dataclass(frozen=True)
class StoredStyle:
    """A decoder added to a trained run, and what it was fitted to."""

    name: str
    decoder: dict[str, torch.Tensor]  # the decoder's state_dict
    reference: str = ""  # the reference's dataset in this style ("" for a painted style)
    target: str = ""  # ground truth of target:<name>, "" when there is none
    origin: str = "restyle"  # "restyle" or "painted"
    info: dict[str, Any] = field(default_factory=dict)  # steps, seconds, scores, strokes...

    def payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "decoder": {k: v.detach().cpu() for k, v in self.decoder.items()},
            "reference": self.reference,
            "target": self.target,
            "origin": self.origin,
            "info": self.info,
        }


def style_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / STYLES_FOLDER / f"{name}.pt"


def save_style(run_dir: Path, style: StoredStyle) -> Path:
    """Writes RUN/styles/<name>.pt atomically; returns its path."""
    path = style_path(run_dir, style.name)
    atomic_write(path, lambda handle: torch.save(style.payload(), handle))
    return path


def load_style(path: Path) -> StoredStyle:
    """Reads one style file; a broken or foreign file is a UserError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file raises many kinds of errors
        raise UserError(f"{path}: cannot read style file ({type(error).__name__}); delete it to remove the style") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("decoder"), dict):
        raise UserError(f"{path}: not a fastjoint style file; delete it to remove the style")
    if state.get("name") != path.stem:
        raise UserError(f"{path}: holds the style '{state.get('name')}'; a style file must be named after its style")
    return StoredStyle(
        name=state["name"],
        decoder=state["decoder"],
        reference=str(state.get("reference", "")),
        target=str(state.get("target", "")),
        origin=str(state.get("origin", "restyle")),
        info=dict(state.get("info", {})),
    )


def stored_styles(run_dir: Path) -> dict[str, StoredStyle]:
    """The styles in RUN/styles/, by name (sorted)."""
    folder = Path(run_dir) / STYLES_FOLDER
    if not folder.is_dir():
        return {}
    styles = {}
    for path in sorted(folder.glob("*.pt")):
        if not STYLE_NAME.fullmatch(path.stem):
            raise UserError(f"{path}: '{path.stem}' is not a style name; rename or delete the file")
        check_style_name(path.stem, str(path))
        styles[path.stem] = load_style(path)
    return styles


def run_styles(config: Config, stored: dict[str, StoredStyle]) -> tuple[Config, Pairings]:
    """A run's config and pairings once its stored styles join the config's.

    A stored style fitted to photos (`restyle`) becomes a desired style of the config, with
    its datasets; a stored style of the same name as a config style replaces it (it was
    written with `restyle --force`). A painted style has no photos: it joins the pairings
    as a style that transfers but was never trained (`Pairings.painted`).
    """
    styles = dict(config.data.styles)
    painted = []
    for name, style in stored.items():
        if style.reference:
            styles[name] = StyleData(reference=style.reference, target=style.target)
        else:
            styles.pop(name, None)
            painted.append(name)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, styles=styles))
    return config, Pairings(tuple(styles), tuple(painted))
