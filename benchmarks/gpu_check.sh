#!/usr/bin/env bash
# The one prepared device check for a session lent a GPU machine (the `device` tool), under
# 8 minutes on an H100/H200, every figure under $OUT:
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=540)                 # as-is
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540) # + the Trm++ steps
# 1. kernel and reference tests on the GPU (the Pallas HSTU kernel compiled by Triton, cuDNN vs
#    XLA attention, the streamed NIP loss, the encoders vs their NumPy references) at "highest"
#    float32 matmul precision (tests/conftest.py's setting; --noconftest: no tokenizer there);
# 2. the bf16 matmul rate at 8192³ (the MFU denominator) and HSTU fused vs the XLA reference,
#    forward + backward, L = 512 .. 8192 (benchmarks/hstu_attention.py);
# 3. LLM decode, ours vs transformers, batch 1 and 8: Qwen2.5-0.5B's architecture with random
#    weights in bf16 (no GGUF there; benchmarks/llm.py --preset);
# 4. Trm++ bf16 training steps at 25M and 1.2B with MFU (benchmarks/gpu_step.py). These need
#    ml_collections and grain, which the image lacks: carry them as wheels in .whl (see
#    benchmarks/gpu_full.sh's header for the pip download line; .whl is git-excluded). Without
#    .whl this part says so and is skipped; everything else runs on the image as it is.
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
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 180 python3 -m pytest -q -p no:cacheprovider --noconftest \
  tests/test_hstu_pallas.py tests/test_encoders.py tests/test_nip_loss.py -k "not popularity_baseline_equals" \
  2>&1 | tee "$out/tests.log" | tail -25

stamp "2. HSTU fused vs reference, bf16"
timeout 150 python3 benchmarks/hstu_attention.py --lengths 512 1024 2048 4096 8192 --batch 4 --heads 8 \
  --head_dim 64 --dtype bfloat16 --fused_max 8192 --repeats 5 --out "$out/hstu_attention.json"

stamp "3. LLM decode (Qwen2.5-0.5B architecture, random weights, bf16)"
timeout 120 python3 benchmarks/llm.py --preset qwen2.5-0.5b --dtype bfloat16 --batches 1 8 --prompt 128 \
  --new 64 --repeats 3 --no_cache_too 0 --out "$out/llm.json"

stamp "4. Trm++ bf16 training steps, MFU"
if python3 -c "import ml_collections, grain" 2>/dev/null; then
  timeout 150 python3 benchmarks/gpu_step.py --sizes 25m 1b --batches 128 16 --steps 10 --out "$out"
else
  echo "skipped: ml_collections / grain missing (carry .whl; see the header)"
fi
stamp "done"
