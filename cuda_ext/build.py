"""How fastjoint's native kernels are built, shared by setup.py and the just-in-time loader.

One library holds every op: `csrc/ops.cpp` (the schemas), the CPU kernels, and the CUDA
kernels when CUDA is wanted. The build is keyed by a digest of the sources, the flags and
the torch it is built against, so a changed source or flag builds afresh and a stale build
is never loaded.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
AOT_NAME = "fastjoint._C"


def sources(with_cuda: bool, csrc: Path = CSRC) -> list[Path]:
    """The files compiled: every .cpp, and every .cu when `with_cuda`."""
    return sorted(csrc.glob("*.cpp")) + (sorted(csrc.glob("*.cu")) if with_cuda else [])


def flags(with_cuda: bool) -> dict[str, list[str]]:
    """Compiler and linker flags beside torch's own (which choose the C++ standard).

    OpenMP makes at::parallel_for run on every core. Not setting errno and not trapping
    (torch's own flags) let the per-sample loops vectorise; no value changes.
    """
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    result = {"extra_cflags": cxx, "extra_ldflags": ["-fopenmp"]}
    if with_cuda:
        result["extra_cuda_cflags"] = ["-O3", "--use_fast_math", "-lineinfo"]
    return result


def cuda_wanted() -> bool:
    """Whether the CUDA kernels are built: a CUDA torch and a CUDA toolkit (no GPU needed)."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None


def build_key(with_cuda: bool, csrc: Path = CSRC) -> str:
    """A digest of everything that changes the built library."""
    import torch

    digest = hashlib.sha256()
    for path in sources(with_cuda, csrc) + sorted(csrc.glob("*.h")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(repr(sorted(flags(with_cuda).items())).encode())
    digest.update(f"{torch.__version__} {torch.version.cuda} {sys.version_info[:2]} {with_cuda}".encode())
    digest.update(os.environ.get("TORCH_CUDA_ARCH_LIST", "").encode())
    return digest.hexdigest()[:16]


def jit_build(build_dir: Path, with_cuda: bool, csrc: Path = CSRC) -> Path:
    """Compiles the library into `build_dir` with torch.utils.cpp_extension; returns its path.

    Raises whatever the compiler's failure raises (a RuntimeError holding its output).
    """
    from torch.utils.cpp_extension import load

    name = f"fastjoint_ext_{build_key(with_cuda, csrc)}"
    build_dir.mkdir(parents=True, exist_ok=True)
    chosen = flags(with_cuda)
    load(
        name=name,
        sources=[str(p) for p in sources(with_cuda, csrc)],
        extra_cflags=chosen["extra_cflags"],
        extra_cuda_cflags=chosen.get("extra_cuda_cflags"),
        extra_ldflags=chosen["extra_ldflags"],
        extra_include_paths=[str(csrc)],
        build_directory=str(build_dir),
        with_cuda=with_cuda,
        is_python_module=False,
    )
    return build_dir / f"{name}.so"


def setup_extension():
    """The setuptools extension for an ahead-of-time build (`FASTJOINT_BUILD_EXT=1`)."""
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    with_cuda = cuda_wanted()
    chosen = flags(with_cuda)
    root = CSRC.parents[1]
    relative = [str(p.relative_to(root)) for p in sources(with_cuda)]
    extra = {"cxx": chosen["extra_cflags"]}
    if with_cuda:
        extra["nvcc"] = chosen["extra_cuda_cflags"]
    kind = CUDAExtension if with_cuda else CppExtension
    return kind(
        AOT_NAME,
        relative,
        include_dirs=[str(CSRC)],
        extra_compile_args=extra,
        extra_link_args=chosen["extra_ldflags"],
    )
