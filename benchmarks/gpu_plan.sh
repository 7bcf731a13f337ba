#!/usr/bin/env bash
# The memory planner against a real GPU (a lent machine, the `device` tool): planned vs measured
# peak of the Stage 1 step of configs/scale.py:1b on one device (benchmarks/plan_check.py).
# Two calls on the same warm machine, as for gpu_full.sh:
#   run(command="cp .gg/part00 /tmp/part00", carry=[".gg"])
#   run(command="bash benchmarks/gpu_plan.sh", carry=[".whl", ".gg2"], timeout_s=540)
set -uo pipefail
out="${OUT:-/tmp/gpu_plan}"; mkdir -p "$out"
exec > >(tee -a "$out/gpu_plan.log") 2>&1
source benchmarks/gpu_setup.sh || exit 1
export PYTHONUNBUFFERED=1 JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache
python3 -c "import jax; print('jax', jax.__version__, jax.devices(), jax.devices()[0].memory_stats()['bytes_limit'] / 2**30, 'GiB limit')"
python3 benchmarks/plan_check.py --size "${SIZE:-1b}" --batches ${BATCHES:-32 96 256} --out "$out"
