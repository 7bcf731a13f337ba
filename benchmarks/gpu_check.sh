#!/usr/bin/env bash
# One prepared device check (run by the `device` tool on a GPU machine whose image has jax, flax,
# optax and pytest but not our whole venv): the encoder, loss and retrieval-metric tests, each
# against its independent reference (NumPy recurrences, plain jnp, brute force), on the GPU,
# first at JAX's default float32 matmul precision (TF32 on Hopper), then at "highest".
# Usage there: bash benchmarks/gpu_check.sh   (writes logs under $OUT when it is set)
set -uo pipefail
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
files="tests/test_encoders.py tests/test_nip_loss.py tests/test_metrics.py"
skip="not popularity_baseline_equals"  # needs the synthetic data fixture (conftest: our tokenizer)
for precision in default highest; do
  echo "=== JAX_DEFAULT_MATMUL_PRECISION=$precision"
  start=$(date +%s)
  if [ "$precision" = default ]; then unset JAX_DEFAULT_MATMUL_PRECISION; else export JAX_DEFAULT_MATMUL_PRECISION=$precision; fi
  python3 -m pytest -q -p no:cacheprovider --noconftest $files -k "$skip" 2>&1 | tee "$out/tests_$precision.log" | tail -25
  echo "=== $precision: $(( $(date +%s) - start )) s"
done
