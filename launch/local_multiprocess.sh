#!/usr/bin/env bash
# N JAX processes on this machine, joined through a loopback coordinator: the multi-process path
# that TPU pod slices and multi-GPU hosts take (launch/tpu_pod.sh, launch/slurm.sh), on CPUs.
#
#   launch/local_multiprocess.sh N configs/<name>.py [--config.key=value ...] [--workdir DIR]
#
# Each process gets DEVICES_PER_PROCESS (default 4) simulated CPU devices, so N=2 gives one mesh
# of 8 devices over two processes. Process 0's output streams here; every process's output is in
# LOG_DIR/process_<i>.log (default: a new /tmp/uqa-multiprocess.* directory). If one process
# fails, the others are stopped (they would wait for it at the next barrier forever).
# PORT picks the coordinator's port (default: a free one); PYTHON the interpreter (.venv/bin/python).
set -euo pipefail
if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
  echo "launch: needs bash >= 5.1 (wait -n -p); this is $BASH_VERSION" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
usage="usage: launch/local_multiprocess.sh N configs/<name>.py [overrides...]"
n="${1:?$usage}"
config="${2:?$usage}"
shift 2
python="${PYTHON:-.venv/bin/python}"
devices="${DEVICES_PER_PROCESS:-4}"
port="${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
logs="${LOG_DIR:-$(mktemp -d /tmp/uqa-multiprocess.XXXXXX)}"
mkdir -p "$logs"
echo "launch: $n processes x $devices CPU devices, coordinator 127.0.0.1:$port, logs in $logs"
pids=()
for ((i = 0; i < n; i++)); do
  cmd=("$python" -m uqa_jax.main --config "$config" "$@" --coordinator "127.0.0.1:$port"
       --num_processes "$n" --process_id "$i")
  echo "launch: process $i: XLA_FLAGS=--xla_force_host_platform_device_count=$devices JAX_PLATFORMS=cpu ${cmd[*]}"
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu "${cmd[@]}" \
    > "$logs/process_$i.log" 2>&1 &
  pids+=($!)
done
tail -n +1 -f "$logs/process_0.log" --pid "${pids[0]}" &
for ((left = n; left > 0; left--)); do  # as each process ends (bash >= 5.1: wait -n -p)
  finished=""
  if ! wait -n -p finished "${pids[@]}"; then
    for i in "${!pids[@]}"; do [[ "${pids[$i]}" == "$finished" ]] && failed=$i; done
    echo "launch: process ${failed:-?} failed; stopping the others (its log: $logs/process_${failed:-?}.log)" >&2
    tail -n 20 "$logs/process_${failed:-0}.log" >&2
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    exit 1
  fi
done
wait 2>/dev/null || true
echo "launch: all $n processes finished"
