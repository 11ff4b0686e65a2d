"""Compositing: the reference against a per-ray Python loop, the fused kernel of cuda_ext
(CPU, and CUDA where present) against the reference, values and gradients; the loader."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from conftest import CUDA, REPO, default_signals
from cuda_ext import build
from fastjoint.ops import composite, native
from fastjoint.ops._torch_impl import _composite, _ray_offsets


def loop_composite(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays):
    """Front to back, one sample at a time: T *= 1 - alpha."""
    rgb, opacity, depth = [], [], []
    for r in range(n_rays):
        c = torch.zeros(3, dtype=sigmas.dtype)
        o = torch.zeros((), dtype=sigmas.dtype)
        z = torch.zeros((), dtype=sigmas.dtype)
        transmittance = torch.ones((), dtype=sigmas.dtype)
        for i in (ray_indices == r).nonzero()[:, 0].tolist():
            alpha = 1 - torch.exp(-sigmas[i] * (t_ends[i] - t_starts[i]))
            weight = transmittance * alpha
            c = c + weight * rgbs[i]
            o = o + weight
            z = z + weight * (t_starts[i] + t_ends[i]) / 2
            transmittance = transmittance * (1 - alpha)
        rgb.append(c), opacity.append(o), depth.append(z)
    return torch.stack(rgb), torch.stack(opacity), torch.stack(depth)


def packed_batch(counts, generator, sigma_scale=3.0, dtype=torch.float32):
    """Random packed samples with the given number of samples per ray."""
    counts = torch.tensor(counts)
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), counts)
    n = int(counts.sum())
    dt = torch.rand(n, generator=generator, dtype=dtype) * 0.1 + 0.01
    starts = torch.cat([torch.cumsum(dt[ray_indices == r], 0) - dt[ray_indices == r] for r in range(len(counts))]) + 2.0
    sigmas = torch.rand(n, generator=generator, dtype=dtype) * sigma_scale
    rgbs = torch.rand(n, 3, generator=generator, dtype=dtype)
    return sigmas, rgbs, starts, starts + dt, ray_indices, len(counts)


CASES = {
    "mixed": [3, 0, 7, 1, 0, 12],  # includes rays without samples
    "single": [1],
    "long": [200, 150],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_values_and_gradients_match_the_loop(case, index_dtype):
    generator = torch.Generator().manual_seed(len(CASES[case]))
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch(CASES[case], generator)
    sigmas.requires_grad_(), rgbs.requires_grad_()
    out = composite(sigmas, rgbs, starts, ends, indices.to(index_dtype), n_rays)
    expected = loop_composite(sigmas.double(), rgbs.double(), starts.double(), ends.double(), indices, n_rays)
    for ours, theirs in zip(out, expected):
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-6)

    v_rgb, v_opacity, v_depth = (torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in expected)
    ours_grads = torch.autograd.grad(
        (out.rgb.double() * v_rgb).sum() + (out.opacity.double() * v_opacity).sum() + (out.depth.double() * v_depth).sum(),
        (sigmas, rgbs),
    )
    theirs_grads = torch.autograd.grad(
        (expected[0] * v_rgb).sum() + (expected[1] * v_opacity).sum() + (expected[2] * v_depth).sum(), (sigmas, rgbs)
    )
    for ours, theirs in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-4, atol=1e-5)


def test_near_opaque_samples_saturate_without_nan():
    generator = torch.Generator().manual_seed(9)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch([64, 64], generator, sigma_scale=1e4)
    sigmas.requires_grad_()
    out = composite(sigmas, rgbs, starts, ends, indices, n_rays)
    torch.testing.assert_close(out.opacity, torch.ones(2))
    (v_sigmas,) = torch.autograd.grad(out.rgb.sum() + out.depth.sum(), sigmas)
    assert torch.isfinite(v_sigmas).all()


def test_no_samples_gives_zeros():
    empty = torch.empty(0)
    out = composite(empty.requires_grad_(), torch.empty(0, 3), empty, empty, torch.empty(0, dtype=torch.long), 4)
    assert torch.equal(out.rgb, torch.zeros(4, 3)) and torch.equal(out.opacity, torch.zeros(4))


@pytest.mark.gradcheck
def test_reference_gradcheck_float64():
    generator = torch.Generator().manual_seed(4)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch([4, 0, 6, 1], generator, dtype=torch.float64)
    sigmas.requires_grad_(), rgbs.requires_grad_()
    assert torch.autograd.gradcheck(lambda s, c: _composite(s, c, starts, ends, indices, n_rays), (sigmas, rgbs))


# --- the fused kernel against the reference --------------------------------------------


@pytest.fixture(scope="module")
def fused():
    """The native library, built (or loaded from the cache) once; a failed build fails here."""
    problem = native.load()
    assert problem is None, f"the native kernels did not build: {problem}"


def random_counts(n_rays: int, max_samples: int, generator: torch.Generator) -> list[int]:
    """Samples per ray, about a fifth of the rays empty."""
    counts = torch.randint(0, max_samples + 1, (n_rays,), generator=generator)
    counts[torch.rand(n_rays, generator=generator) < 0.2] = 0
    return counts.tolist()


def compare_with_reference(counts, seed, device, dtype=torch.float32, index_dtype=torch.int64, sigma_scale=3.0, strided=False):
    """Fused vs reference on one random batch: outputs, and gradients of a random upstream."""
    generator = torch.Generator().manual_seed(seed)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch(counts, generator, sigma_scale, dtype)
    if strided:  # non-contiguous views of the same values
        sigmas = torch.stack([sigmas, sigmas], 1)[:, 0]
        rgbs = torch.cat([rgbs, rgbs], 1)[:, ::2]
        assert not sigmas.is_contiguous() and not rgbs.is_contiguous()
    sigmas, rgbs, starts, ends = (t.to(device) for t in (sigmas, rgbs, starts, ends))
    indices = indices.to(device, index_dtype)
    sigmas.requires_grad_(), rgbs.requires_grad_()
    ours = composite(sigmas, rgbs, starts, ends, indices, n_rays, backend="fused")
    reference = composite(sigmas, rgbs, starts, ends, indices, n_rays, backend="torch")
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for name, a, b in zip(("rgb", "opacity", "depth"), ours, reference):
        torch.testing.assert_close(a, b, **tolerance, msg=lambda m, name=name: f"{name}: {m}")
    upstream = [torch.randn(t.shape, generator=generator, dtype=dtype).to(device) for t in reference]
    v_ours = torch.autograd.grad(sum((o * v).sum() for o, v in zip(ours, upstream)), (sigmas, rgbs))
    v_reference = torch.autograd.grad(sum((o * v).sum() for o, v in zip(reference, upstream)), (sigmas, rgbs))
    grad_tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-10}
    for name, a, b in zip(("v_sigmas", "v_rgbs"), v_ours, v_reference):
        torch.testing.assert_close(a, b, **grad_tolerance, msg=lambda m, name=name: f"{name}: {m}")


SIZES = {  # name -> (n_rays, most samples per ray)
    "few": (5, 4),
    "many": (300, 40),
    "long": (8, 1000),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_fused_cpu_matches_reference(fused, size, index_dtype):
    n_rays, most = SIZES[size]
    seed = int.from_bytes(os.urandom(4), "little")  # fresh inputs every run; the seed is in the report
    generator = torch.Generator().manual_seed(seed)
    compare_with_reference(random_counts(n_rays, most, generator), seed, "cpu", index_dtype=index_dtype)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_native_ray_offsets_match_reference(fused, device, index_dtype):
    generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    for n_rays in (1, 7, 5000):
        counts = torch.tensor(random_counts(n_rays, 9, generator))
        indices = torch.repeat_interleave(torch.arange(n_rays), counts).to(device, index_dtype)
        expected = _ray_offsets(indices, n_rays)
        assert torch.equal(torch.ops.fastjoint.ray_offsets(indices, n_rays), expected), counts.tolist()[:20]
        assert expected[-1].item() == counts.sum().item()


def test_native_ops_reject_malformed_input_with_a_message(fused):
    """Called directly (bypassing the Python checks), the ops raise; they do not crash."""
    with pytest.raises(RuntimeError, match=r"sorted and in \[0, n_rays = 3\)"):
        torch.ops.fastjoint.ray_offsets(torch.tensor([0, 2, 1]), 3)
    with pytest.raises(RuntimeError, match="sorted"):
        torch.ops.fastjoint.ray_offsets(torch.tensor([0, 3]), 3)
    samples = torch.rand(3), torch.rand(2, 3), torch.rand(3), torch.rand(3), torch.tensor([0, 3])
    with pytest.raises(RuntimeError, match=r"rgbs must be \[S, 3\], got \[2, 3\]"):
        torch.ops.fastjoint.composite_forward(*samples)
    with pytest.raises(RuntimeError, match="expected Float, got Double"):
        torch.ops.fastjoint.composite_forward(torch.rand(2), torch.rand(2, 3), torch.rand(2).double(), torch.rand(2), torch.tensor([0, 2]))


@pytest.mark.parametrize("counts", [[1], [0, 0, 0], [0, 1, 0], [64, 0, 64]], ids=["single", "all-empty", "lone", "opaque"])
def test_fused_cpu_edge_cases(fused, counts):
    sigma_scale = 1e4 if max(counts) == 64 else 3.0  # near-opaque samples saturate the long rays
    compare_with_reference(counts, 11, "cpu", sigma_scale=sigma_scale)


def test_fused_cpu_non_contiguous_inputs(fused):
    compare_with_reference([5, 0, 9, 2], 12, "cpu", strided=True)


def test_fused_no_samples_gives_zeros(fused):
    sigmas, empty = torch.empty(0, requires_grad=True), torch.empty(0)
    out = composite(sigmas, torch.empty(0, 3), empty, empty, torch.empty(0, dtype=torch.int32), 3, "fused")
    assert torch.equal(out.rgb, torch.zeros(3, 3)) and torch.equal(out.depth, torch.zeros(3))
    (v_sigmas,) = torch.autograd.grad(out.opacity.sum(), sigmas)
    assert v_sigmas.shape == (0,)


def test_fused_one_output_in_the_loss(fused):
    """Gradients reach sigmas when only some outputs are used (the others arrive as None)."""
    generator = torch.Generator().manual_seed(5)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch([6, 3], generator)
    sigmas.requires_grad_()
    for backend in ("fused", "torch"):
        (grad,) = torch.autograd.grad(composite(sigmas, rgbs, starts, ends, indices, n_rays, backend).depth.sum(), sigmas)
        if backend == "fused":
            fused_grad = grad
    torch.testing.assert_close(fused_grad, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.gradcheck
def test_fused_cpu_gradcheck_float64(fused):
    generator = torch.Generator().manual_seed(6)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch([4, 0, 6, 1], generator, dtype=torch.float64)
    sigmas.requires_grad_(), rgbs.requires_grad_()

    def run(s, c):
        return tuple(composite(s, c, starts, ends, indices, n_rays, backend="fused"))

    assert torch.autograd.gradcheck(run, (sigmas, rgbs))


def test_fused_opcheck(fused):
    """Schema, fake-tensor rule, autograd registration and torch.compile tracing of the op."""
    generator = torch.Generator().manual_seed(8)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch([3, 0, 5], generator)
    offsets = _ray_offsets(indices, n_rays)
    args = (sigmas.requires_grad_(), rgbs.requires_grad_(), starts, ends, offsets)
    torch.library.opcheck(torch.ops.fastjoint.composite_forward.default, args)


@CUDA
@pytest.mark.parametrize("size", SIZES)
def test_fused_cuda_matches_reference(fused, size):
    n_rays, most = SIZES[size]
    seed = int.from_bytes(os.urandom(4), "little")
    generator = torch.Generator().manual_seed(seed)
    for index_dtype in (torch.int32, torch.int64):
        compare_with_reference(random_counts(n_rays, most, generator), seed, "cuda", index_dtype=index_dtype)
    compare_with_reference([64, 0, 64, 1], seed, "cuda", sigma_scale=1e4)
    compare_with_reference([5, 0, 9, 2], seed, "cuda", strided=True)


@CUDA
def test_fused_cuda_matches_cpu_in_float64(fused):
    compare_with_reference([7, 0, 30, 1, 200], 3, "cuda", dtype=torch.float64)


@CUDA
def test_fused_cuda_opcheck(fused):
    generator = torch.Generator().manual_seed(8)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch([3, 0, 5], generator)
    offsets = _ray_offsets(indices, n_rays)
    args = [t.cuda() for t in (sigmas, rgbs, starts, ends, offsets)]
    args[0].requires_grad_(), args[1].requires_grad_()
    torch.library.opcheck(torch.ops.fastjoint.composite_forward.default, tuple(args))


# --- building --------------------------------------------------------------------------


@pytest.mark.slow  # nvcc compiles each CUDA kernel (tens of seconds each)
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize("source", [p for p in build.sources(with_cuda=True) if p.suffix == ".cu"], ids=lambda p: p.name)
def test_cuda_source_compiles_with_nvcc(tmp_path, source):
    """Every CUDA kernel compiles with this machine's nvcc; no GPU needed.

    A CPU-only torch ships the c10/cuda headers without the one its CUDA build generates
    (cuda_cmake_macros.h), so an empty stand-in is supplied; the rest is torch's own.
    """
    from torch.utils.cpp_extension import include_paths

    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    if not any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").exists() for p in include_paths()):
        (shim / "cuda_cmake_macros.h").write_text("#pragma once\n")
    includes = [f"-I{p}" for p in [*include_paths(), tmp_path / "shim", sysconfig.get_paths()["include"], build.CSRC]]
    target = tmp_path / f"{source.stem}.o"
    command = [
        "nvcc",
        "-c",
        str(source),
        "-o",
        str(target),
        "-std=c++20",
        "-arch=sm_80",
        *build.flags(with_cuda=True)["extra_cuda_cflags"],
        *includes,
    ]
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=default_signals)
    assert result.returncode == 0, result.stderr[-3000:]
    assert target.stat().st_size > 0


def test_every_op_has_a_cuda_twin():
    """Each <op>_cpu.cpp has its <op>_cuda.cu beside it, and the nvcc test above compiles it."""
    cpu = {p.name.removesuffix("_cpu.cpp") for p in build.CSRC.glob("*_cpu.cpp")}
    cuda = {p.name.removesuffix("_cuda.cu") for p in build.CSRC.glob("*_cuda.cu")}
    assert cpu == cuda and {"composite", "hashgrid"} <= cpu, (cpu, cuda)


@pytest.mark.slow  # builds the native kernels (tens of seconds to minutes on 2 cores)
def test_failed_build_is_reported_in_one_line_and_remembered(tmp_path):
    csrc = tmp_path / "csrc"
    shutil.copytree(build.CSRC, csrc)
    ops = csrc / "ops.cpp"
    ops.write_text("this is not C++;\n" + ops.read_text())
    problem = native.build_and_load(tmp_path / "build", False, csrc)
    assert problem is not None and "\n" not in problem and "error" in problem.lower(), problem
    assert (tmp_path / "build" / native.FAILED).exists()
    again = native.build_and_load(tmp_path / "build", False, csrc)
    assert again.startswith(problem) and "remembered" in again


@pytest.mark.slow  # builds the native kernels (tens of seconds to minutes on 2 cores)
@pytest.mark.skipif(importlib.util.find_spec("fastjoint._C") is not None, reason="an ahead-of-time build is installed")
def test_fresh_build_clears_a_stale_lock(tmp_path):
    """A build killed mid-way leaves torch's lock file; the next build must not wait on it.

    Runs in a fresh process with an empty cache (a process can load the library only once).
    """
    key = build.build_key(with_cuda=False)
    stale = tmp_path / "ext" / key / "lock"
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    environment = {**os.environ, "FASTJOINT_CACHE": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    script = "from fastjoint.ops import native; print('problem:', native.load())"
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=900, preexec_fn=default_signals
    )
    assert "problem: None" in result.stdout, result.stdout + result.stderr
    assert "stale build lock" in result.stdout + result.stderr
    assert not stale.exists()


@pytest.mark.slow  # builds the native kernels (tens of seconds to minutes on 2 cores)
def test_ahead_of_time_build_is_used(tmp_path):
    """`FASTJOINT_BUILD_EXT=1` builds fastjoint._C with setup.py; the loader then builds nothing."""
    for name in ("setup.py", "README.md", "fastjoint", "cuda_ext"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    environment = {**os.environ, "FASTJOINT_BUILD_EXT": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(tmp_path)}
    built = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=default_signals,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert list((tmp_path / "fastjoint").glob("_C*.so")), "no fastjoint/_C*.so was built"
    cache = tmp_path / "cache"
    # The ahead-of-time ops against the torch references on random inputs, values and gradients.
    script = """
import math, torch
from fastjoint.ops import native, composite, grid_layout, hashgrid_encode
print('problem:', native.load())
g = torch.Generator().manual_seed(0)
sigmas, rgbs = torch.rand(6, generator=g).requires_grad_(), torch.rand(6, 3, generator=g)
starts = torch.rand(6, generator=g); ends = starts + 0.1; indices = torch.tensor([0, 0, 2, 2, 2, 3])
outs = [composite(sigmas, rgbs, starts, ends, indices, 4, b) for b in ('torch', 'fused')]
grads = [torch.autograd.grad(o.rgb.sum() + o.depth.sum(), sigmas)[0] for o in outs]
print('composite:', max((a - b).abs().max().item() for a, b in zip((*outs[0], grads[0]), (*outs[1], grads[1]))))
layout = grid_layout(4, 10, 4, 2.0)
table = torch.randn(layout.n_params, 2, generator=g).requires_grad_()
x = torch.rand(100, 3, generator=g)
encoded = [hashgrid_encode(x, table, layout, b) for b in ('torch', 'native')]
v = torch.randn(encoded[0].shape, generator=g)
v_tables = [torch.autograd.grad(e, table, v)[0] for e in encoded]
print('hashgrid:', max((encoded[0] - encoded[1]).abs().max().item(), (v_tables[0] - v_tables[1]).abs().max().item()))
"""
    loaded = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**environment, "FASTJOINT_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=default_signals,
    )
    assert "problem: None" in loaded.stdout, loaded.stdout + loaded.stderr
    differences = dict(line.split(": ") for line in loaded.stdout.splitlines() if line.startswith(("composite", "hashgrid")))
    assert set(differences) == {"composite", "hashgrid"}, loaded.stdout + loaded.stderr
    for op, difference in differences.items():
        assert float(difference) < 1e-5, f"{op}: the ahead-of-time op differs from the reference by {difference}"
    assert not cache.exists(), "the loader built instead of using fastjoint._C"
