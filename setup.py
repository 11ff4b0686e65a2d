"""Installs fastjoint and its `fastjoint` command.

A plain `pip install .` is pure Python: the native kernels of cuda_ext/ are built on first
use (see cuda_ext/build.py). Set FASTJOINT_BUILD_EXT=1 (and pass --no-build-isolation so
the build sees your torch) to build them ahead of time instead.
"""

import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def _native_build() -> dict:
    """setup() arguments that build cuda_ext ahead of time, when FASTJOINT_BUILD_EXT=1."""
    if os.environ.get("FASTJOINT_BUILD_EXT") != "1":
        return {}
    sys.path.insert(0, str(ROOT))
    from torch.utils.cpp_extension import BuildExtension

    from cuda_ext.build import setup_extension

    return {"ext_modules": [setup_extension()], "cmdclass": {"build_ext": BuildExtension}}


def _version() -> str:
    for line in (ROOT / "fastjoint" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("fastjoint/__init__.py has no __version__")


setup(
    name="fastjoint",
    version=_version(),
    description="Restyle a 3D scene by analogy: joint hash-grid radiance fields in minutes.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fastjoint", "fastjoint.*", "cuda_ext"]),
    package_data={"cuda_ext": ["csrc/*.cpp", "csrc/*.cu", "csrc/*.h"]},
    install_requires=[
        # The CPU wheel 2.13.0 satisfies this; GPU users install a CUDA torch first.
        "torch>=2.4,<2.15",
        "nerfacc==0.5.3",
        "numpy>=1.24",
        "imageio>=2.31",
        "imageio-ffmpeg>=0.4.9",
        "pillow>=9",
        "rich>=13",
        "tyro>=0.8",
        "trimesh>=4.4",  # `fastjoint export`: writes its PLY and glTF files
        "scikit-image>=0.22",  # `fastjoint export`: marching cubes
        "pycolmap>=3.12",  # `fastjoint process`: COLMAP's poses for photos and videos (PyPI wheels, no binary to install)
        "ninja",  # builds the native kernels on first use
    ],
    extras_require={
        # `fastjoint view`: the browser viewer.
        "viewer": ["viser>=1.0"],
        # The tests drive the viewer in headless Chromium (Debian's chromium package; see README)
        # and run ruff, pinned so that its formatting does not change under us.
        # `fastjoint sweep`: many runs as tasks on Ray (a local cluster, or one by address).
        "sweep": ["ray>=2.9"],
        # The export's files are read back with readers independent of trimesh (plyfile, pygltflib).
        "test": ["pytest>=7", "viser>=1.0", "playwright>=1.40", "ruff==0.17.6", "ray>=2.9", "plyfile>=1.0", "pygltflib>=1.16"],
    },
    entry_points={"console_scripts": ["fastjoint=fastjoint.cli:main"]},
    **_native_build(),
)
