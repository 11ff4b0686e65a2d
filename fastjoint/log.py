"""The console that every part of fastjoint prints through."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console(stderr=True, highlight=False)
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Prints a one-line warning the first time it is given."""
    if message not in _warned:
        _warned.add(message)
        console.print(f"[yellow]warning:[/yellow] {message}")


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[..., None]]:
    """A transient progress bar; yields a `progress(done, total, description=None)` callback for
    long work (a new description names the next phase of the work)."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int | None, description: str | None = None) -> None:
            progress.update(task, completed=done, total=total, **({} if description is None else {"description": description}))

        yield update
