"""Writing files so that a kill at any moment leaves either the old file or the new one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write` on `path.partial`, syncs it, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON, atomically."""
    text = json.dumps(value, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))
