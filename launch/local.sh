#!/usr/bin/env bash
# Run the main job on this machine: launch/local.sh configs/<name>.py [--config.key=value ...]
# Multi-host launchers (Cloud TPU pod slices, SLURM multi-GPU) arrive with the sharded
# training stages; they wrap the same command.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:?usage: launch/local.sh configs/<name>.py [overrides...]}"
shift
exec .venv/bin/python -m uqa_jax.main --config "$config" "$@"
