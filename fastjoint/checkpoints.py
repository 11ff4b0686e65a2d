"""A run's checkpoints: checkpoints/latest.pt and the one before it, checkpoints/previous.pt.

Written atomically (a kill or a full disk at any moment leaves the last checkpoint whole);
read with a fallback to the previous one when the latest is missing, truncated, foreign or
does not fit.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from fastjoint.errors import UserError
from fastjoint.files import atomic_path
from fastjoint.log import console

CHECKPOINT = Path("checkpoints") / "latest.pt"
PREVIOUS = Path("checkpoints") / "previous.pt"  # the checkpoint before the latest, kept as a fallback
CHECKPOINT_KEYS = frozenset({"model", "estimators", "step", "train_seconds"})


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a checkpoint to resume from (the latest, or the one before it)."""
    return (run_dir / CHECKPOINT).is_file() or (run_dir / PREVIOUS).is_file()


def save_checkpoint(path: Path, payload: dict[str, Any], previous: Path | None = None) -> None:
    """Writes atomically: a kill or a full disk at any moment leaves the last checkpoint whole.

    Args:
        path: where the checkpoint goes (checkpoints/latest.pt).
        payload: what torch.save writes.
        previous: if given, the file now at `path` becomes `previous` (checkpoints/previous.pt)
            as the new one replaces it; `path` exists at every moment.
    """
    # Serialised in memory first: torch.save into a file reports a full disk as a cryptic
    # RuntimeError, a plain write reports it as the OSError it is.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path, previous) as partial, open(partial, "wb") as handle:
        handle.write(buffer.getbuffer())


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint's state; UserError (naming `path`) for a missing, truncated or foreign file."""
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated or foreign file raises many kinds of errors
        raise UserError(f"{path}: cannot read checkpoint ({first_line(error)})") from None
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= set(state):
        raise UserError(f"{path}: not a fastjoint checkpoint")
    return state


def load_latest(run_dir: Path, device: torch.device, apply: Callable[[dict[str, Any], Path], None]) -> tuple[dict[str, Any], Path]:
    """The run's latest checkpoint, or its previous one when the latest cannot be used.

    `apply(state, path)` puts a loaded state to use (into a model, an optimizer) and raises
    UserError when it does not fit; a latest checkpoint that is missing, truncated, foreign
    or does not fit falls back to checkpoints/previous.pt, with one line of warning.

    Returns:
        The state used and the file it came from.
    """
    latest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    try:
        state = load_checkpoint(latest, device)
        apply(state, latest)
        return state, latest
    except UserError as problem:
        if not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous, device)
            apply(state, previous)
        except UserError as also:
            raise UserError(f"{problem}; the fallback {also}") from None
        console.print(
            "[yellow]warning:[/yellow] " + escape(f"{problem}; using {previous} (step {int(state['step'])}) instead"),
            soft_wrap=True,
        )
        return state, previous


def first_line(error: BaseException) -> str:
    """An exception as a short phrase: its type and the first sentence of its message."""
    text = str(error).strip().splitlines()
    sentence = text[0].split(". ")[0].rstrip(".") if text else ""
    return f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__
