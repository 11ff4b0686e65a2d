#!/bin/bash
# The GPU check of the hash grid and the GPU-sized batches (issue 10), as one command for a
# lent GPU machine (see benchmarks/README.md, "On a GPU"): builds the native kernels, runs
# the CUDA tests, the hash-grid and throughput benchmarks and the demo's training, and
# writes everything under $OUT (at most 8 files). Run from the repository root, with the
# wheels the machine lacks (nerfacc, tyro and its needs, imageio-ffmpeg) in .whl/.
# Prepared on a machine without a GPU: not yet run as of 2026-11-27.
set -o pipefail
OUT=${OUT:-/tmp/fastjoint-gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
log="$OUT/check.log"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee "$log"
python3 -m pytest -q -rs tests/test_hashgrid.py tests/test_mlp.py tests/test_composite.py tests/test_march.py tests/test_extent.py tests/test_baked.py 2>&1 | tail -25 | tee -a "$log"
python3 -m benchmarks.hashgrid --device cuda --results "$OUT" 2>&1 | tee -a "$log"
# throughput includes a row with the feature heads and decoders compiled by torch.compile (issue 10).
python3 -m benchmarks.throughput --results "$OUT" 2>&1 | tee -a "$log"
# The demo's 1,500 steps with GPU-sized batches (train.target_samples = auto: 2^18 samples per pairing).
python3 -m fastjoint train configs/demo.toml --device cuda --output-dir /tmp/gpu-runs --no-render 2>&1 | tail -15 | tee -a "$log"
cp /tmp/gpu-runs/demo/eval.json "$OUT/demo-eval.json" && cp /tmp/gpu-runs/demo/metrics.jsonl "$OUT/demo-metrics.jsonl"
# The fast renderer (issue 25) against the exact one on that run: the baked march's CUDA kernel.
python3 -m benchmarks.fast --run /tmp/gpu-runs/demo --results "$OUT" 2>&1 | tee -a "$log"
# The view-dependent bake (unbounded scenes' default since 2026-12-05) forced on the same run: the kernel with 16 channels, the feature network per kept sample.
python3 -m benchmarks.fast --run /tmp/gpu-runs/demo --bake view-dependent --results "$OUT/view-dependent" 2>&1 | tee -a "$log"
