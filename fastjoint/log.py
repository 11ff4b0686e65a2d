"""The console that every part of fastjoint prints through."""

from rich.console import Console

console = Console(stderr=True, highlight=False)
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Prints a one-line warning the first time it is given."""
    if message not in _warned:
        _warned.add(message)
        console.print(f"[yellow]warning:[/yellow] {message}")
