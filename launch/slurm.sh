#!/usr/bin/env bash
# Several GPU hosts under SLURM: one JAX process per GPU (PER=gpu, the default) or per host (PER=host).
#
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 launch/slurm.sh configs/scale.py:1b [overrides...]
#   PER=host sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm.sh configs/scale.py:1b
#
# Run by sbatch (or salloc), it starts itself once per task with srun; each task then runs
#   python -m uqa_jax.main --config ... --coordinator <first node>:PORT --num_processes $SLURM_NTASKS
#          --process_id $SLURM_PROCID
# with one GPU visible when PER=gpu (the task's entry of SLURM's CUDA_VISIBLE_DEVICES, kept as it
# is when SLURM bound one GPU per task). The workdir (--workdir, default
# workdir/<config>) must be on a filesystem every node sees: process 0 builds the data set there
# and the others read it. Set mesh axes to the global device count, e.g. --config.mesh.fsdp=16.
# DRY_RUN=1 prints what each task would run and runs nothing. PYTHON: the interpreter (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:?usage: sbatch [options] launch/slurm.sh configs/<name>.py [overrides...]}"
shift
: "${SLURM_JOB_ID:?launch/slurm.sh runs inside a SLURM allocation (sbatch or salloc)}"
python="${PYTHON:-.venv/bin/python}"
per="${PER:-gpu}"
port="${PORT:-29500}"
if [[ -z "${SLURM_STEP_ID:-}" && -z "${DRY_RUN:-}" ]]; then  # the batch script itself: one srun task per process
  echo "launch: srun --ntasks=${SLURM_NTASKS:-1} $0 $config $*"
  exec srun --ntasks="${SLURM_NTASKS:-1}" "$0" "$config" "$@"
fi
coordinator_host="${COORDINATOR_HOST:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}"
cmd=("$python" -m uqa_jax.main --config "$config" "$@" --coordinator "$coordinator_host:$port"
     --num_processes "${SLURM_NTASKS:?}" --process_id "${SLURM_PROCID:?}")
if [[ "$per" == "gpu" ]]; then  # this task's GPU: its entry in SLURM's list (or its local index)
  IFS=, read -ra visible <<< "${CUDA_VISIBLE_DEVICES:-}"
  if ((${#visible[@]} > 1)); then
    export CUDA_VISIBLE_DEVICES="${visible[$SLURM_LOCALID]:?task $SLURM_LOCALID has no GPU in $CUDA_VISIBLE_DEVICES}"
  elif ((${#visible[@]} == 0)); then
    export CUDA_VISIBLE_DEVICES="${SLURM_LOCALID:?}"
  fi  # one entry: SLURM bound one GPU to this task already
elif [[ "$per" != "host" ]]; then
  echo "launch: PER=$per; expected gpu or host" >&2
  exit 2
fi
echo "launch: task ${SLURM_PROCID} on $(hostname)${CUDA_VISIBLE_DEVICES:+ (GPU $CUDA_VISIBLE_DEVICES)}: ${cmd[*]}"
if [[ -n "${DRY_RUN:-}" ]]; then
  exit 0
fi
exec "${cmd[@]}"
