"""Loading the native kernels of cuda_ext: ahead-of-time build, else built on first use.

`load()` returns None once the library is loaded (its ops are in `torch.ops.fastjoint`) or
a one-line reason why it cannot be. It tries, in order:

1. `fastjoint._C`, built by `FASTJOINT_BUILD_EXT=1 pip install --no-build-isolation .`;
2. a just-in-time build cached under `$FASTJOINT_CACHE` (default `~/.cache/fastjoint`) in a
   folder named by the digest of the sources and flags. The first use compiles (about a
   minute on two cores) behind a spinner; later uses load the cached library directly.

A failed build is remembered (`failed.log` beside the build, which holds the compiler's
output) so that later runs report it in one line at once instead of compiling again; delete
that file, or change the sources, to try again. A lock left by a build that was killed is
cleared: builds are serialised by an OS lock that dies with its process, so whoever holds
it knows any older lock file is stale.
"""

from __future__ import annotations

import fcntl
import functools
import importlib
import os
import re
from pathlib import Path

import torch

from fastjoint.log import console

FAILED = "failed.log"

# The modules of the native ops, each with `register_native()` (its autograd and fake-tensor
# rules, registered once after the library loads) and `NATIVE_OPS` (its schema names). A new
# op is its kernel files, its module, and one line here.
OP_MODULES = (
    "fastjoint.ops.baked",
    "fastjoint.ops.composite",
    "fastjoint.ops.hashgrid",
)


def cache_root() -> Path:
    """Where just-in-time builds live: $FASTJOINT_CACHE, else $XDG_CACHE_HOME/fastjoint."""
    if "FASTJOINT_CACHE" in os.environ:
        return Path(os.environ["FASTJOINT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastjoint"


def _one_line(output: str) -> str:
    """The compiler's first error line, else the first non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\berror\b", line, re.IGNORECASE) and "Error building extension" not in line:
            return line[:300]
    return lines[0][:300] if lines else "unknown error"


def build_and_load(build_dir: Path, with_cuda: bool, csrc: Path | None = None) -> str | None:
    """Loads the library cached in `build_dir`, building it first if needed.

    Returns None when loaded, else a one-line reason (also remembered in `build_dir`).
    """
    from cuda_ext import build

    csrc = csrc or build.CSRC
    library = build_dir / f"fastjoint_ext_{build.build_key(with_cuda, csrc)}.so"
    failed = build_dir / FAILED
    if failed.exists():
        return f"{_one_line(failed.read_text())} (remembered from an earlier build; delete {failed} to retry)"
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir.parent / f"{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the OS if this process dies
        if not library.exists():
            stale = build_dir / "lock"  # torch.utils.cpp_extension's own lock file
            if stale.exists():
                console.print(f"[yellow]fastjoint: clearing a stale build lock left by an interrupted build: {stale}")
                stale.unlink()
            if failed.exists():  # another process failed while we waited
                return _one_line(failed.read_text())
            kind = "CPU and CUDA" if with_cuda else "CPU"
            try:
                with console.status(f"Building fastjoint's native {kind} kernels (first use only, about a minute)"):
                    build.jit_build(build_dir, with_cuda, csrc)
            except Exception as error:  # compiler failures come as RuntimeError, a missing tool as others
                failed.write_text(f"{type(error).__name__}: {error}\n")
                return _one_line(str(error))
    try:
        torch.ops.load_library(str(library))
    except OSError as error:  # e.g. a link cut short by a kill: build afresh next time
        library.unlink(missing_ok=True)
        return f"{library} does not load ({error}); removed, the next run builds it again".splitlines()[0]
    return None


@functools.cache
def load() -> str | None:
    """Loads the native library once per process; None when loaded, else why not (one line)."""
    if os.environ.get("FASTJOINT_NATIVE", "1") == "0":
        return "disabled by FASTJOINT_NATIVE=0"
    try:
        import fastjoint._C  # noqa: F401  (an ahead-of-time build registers the ops on import)

        problem = None
    except ImportError:
        try:
            from cuda_ext import build
        except ImportError:
            return "the cuda_ext sources are not installed beside fastjoint"
        with_cuda = torch.cuda.is_available() and build.cuda_wanted()
        problem = build_and_load(cache_root() / "ext" / build.build_key(with_cuda), with_cuda)
    if problem is None:
        for module in OP_MODULES:
            importlib.import_module(module).register_native()  # autograd and fake-tensor rules
    return problem


def native_ops() -> list[str]:
    """Every native op's qualified name (`fastjoint::<op>`), from the op modules."""
    return [name for module in OP_MODULES for name in importlib.import_module(module).NATIVE_OPS]


def problem_on(device: torch.device) -> str | None:
    """Why the native ops cannot run on `device`, or None when they can."""
    problem = load()
    if problem is not None:
        return f"cannot load its native kernels: {problem}"
    if device.type == "cuda":
        missing = [op for op in native_ops() if not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")]
        if missing:
            return f"was built without CUDA kernels for {', '.join(missing)} (no CUDA toolkit found: set CUDA_HOME)"
    if device.type not in ("cpu", "cuda"):
        return f"has no kernels for {device.type}"
    return None
