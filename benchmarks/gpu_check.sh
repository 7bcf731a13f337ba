#!/usr/bin/env bash
# The one prepared device check for a session lent a GPU machine (the `device` tool), at most
# ~8 minutes (its parts' timeouts sum to 490 s), every figure under $OUT:
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=540)                 # as-is
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540) # + the Trm++ steps
# 1. kernel and reference tests on the GPU (the Pallas HSTU kernel compiled by Triton, cuDNN vs
#    XLA attention, the streamed NIP loss, the encoders vs their NumPy references) at "highest"
#    float32 matmul precision (tests/conftest.py's setting; --noconftest: no tokenizer there);
# 2. the float32 and bf16 matmul rates at 2048³ and 8192³ (benchmarks/timing.py: the MFU
#    denominators), then HSTU fused vs the XLA reference, forward + backward, bf16,
#    L = 512 .. 8192, with the outputs compared (benchmarks/hstu_attention.py);
# 3. LLM decode, ours vs transformers, batch 1 and 8: Qwen2.5-0.5B's architecture with random
#    weights in bf16 (no GGUF there; benchmarks/llm.py --preset);
# 4. Trm++ bf16 training steps at 25M (batch 128) and 1.2B (batch 16) with MFU
#    (benchmarks/gpu_step.py). These need ml_collections, grain and gguf, which the image
#    lacks: carry them as wheels in .whl (benchmarks/gpu_full.sh's header has the pip download
#    line; .whl is git-excluded). Without them this part says so and is skipped; parts 1-3 need
#    only what the image has (jax, flax, optax, numpy, pytest, torch, transformers).
set -uo pipefail
out="${OUT:-/tmp/gpu_check}"; mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
fi
t0=$(date +%s)
stamp() { echo "=== $1 ($(( $(date +%s) - t0 )) s)"; }
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"

stamp "1. tests on the GPU"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest \
  tests/unit/encoders/test_hstu_pallas.py tests/unit/encoders/test_encoders.py tests/unit/encoders/test_nip_loss.py -k "not popularity_baseline_equals" \
  2>&1 | tee "$out/tests.log" | tail -30

stamp "2. matmul rates; HSTU fused vs reference, bf16"
timeout 40 python3 benchmarks/timing.py --out "$out"
timeout 100 python3 benchmarks/hstu_attention.py --lengths 512 1024 2048 4096 8192 --batch 4 --heads 8 \
  --head_dim 64 --dtype bfloat16 --fused_max 8192 --repeats 5 --out "$out/hstu_attention.json"

stamp "3. LLM decode (Qwen2.5-0.5B architecture, random weights, bf16)"
timeout 90 python3 benchmarks/llm.py --preset qwen2.5-0.5b --dtype bfloat16 --batches 1 8 --prompt 128 \
  --new 64 --repeats 3 --no_cache_too 0 --out "$out/llm.json"

stamp "4. Trm++ bf16 training steps, MFU"
if python3 -c "import ml_collections, grain, gguf" 2>/dev/null; then
  timeout 110 python3 benchmarks/gpu_step.py --sizes 25m 1b --batches 128 16 --steps 10 --out "$out"
else
  echo "skipped: ml_collections / grain / gguf missing (carry .whl; see the header)"
fi
stamp "done"
