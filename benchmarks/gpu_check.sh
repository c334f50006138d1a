#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, install JAX's CUDA plugin at the pinned version,
# run the core tests on the GPU and the tree benchmark (its section of RESULTS.md gets a "gpu" row).
# Usage, from the repository root after `make install`:  bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
JAXV=$($PY -c 'import jax; print(jax.__version__)')
$PY -m pip install --quiet "jax[cuda12]==$JAXV"
$PY -c 'import jax; d = jax.devices(); print(d); assert d[0].platform == "gpu", "no GPU visible to JAX"'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
$PY -m pytest tests/core -q -x
(cd benchmarks && ../$PY bench_tree.py --queries 1000000)
