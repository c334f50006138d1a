#!/usr/bin/env bash
# The GPU check: the core tests and the core benchmarks on a machine whose Python already has a
# CUDA-enabled JAX (and diffrax, the peer). Nothing is downloaded: the lent GPU machines have no
# network, and their image ships JAX with CUDA, diffrax, pytest and scipy.
# Usage, from the repository root:  PY=python3 bash benchmarks/gpu_check.sh
# Writes the "tree-gpu", "sde-gpu" and "fbm-gpu" sections of benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
# solverlab itself, offline (setuptools from the image; no dependency resolution).
$PY -m pip install --quiet --no-deps --no-build-isolation --no-index -e . \
  || { echo "could not install solverlab offline; is setuptools >= 69 there?"; exit 1; }
$PY -c 'import jax; d = jax.devices(); print(d); assert d[0].platform == "gpu", "no GPU visible to JAX"'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
$PY -m pytest tests/core -q -x -p no:cacheprovider
$PY benchmarks/bench_tree.py --queries 1000000
$PY benchmarks/bench_sde.py --paths 100000
$PY benchmarks/bench_fbm.py --no-peers   # exact fBM against the FFT floor on the GPU
