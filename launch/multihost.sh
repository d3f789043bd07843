#!/usr/bin/env bash
# Starts one llmjax process per host (over ssh) or N processes on this machine, wired
# together with jax.distributed through LLMJAX_COORDINATOR / LLMJAX_NUM_PROCESSES /
# LLMJAX_PROCESS_ID. If any process fails, the others are stopped at once and the launcher
# exits with the failing process's exit code and the end of its log.
#
#   launch/multihost.sh --local=2 --cpu_devices=2 -- \
#       python -m llmjax.main --config=configs/shakespeare.py:smoke --workdir=/tmp/mh
#   launch/multihost.sh --hosts=node1,node2 -- \
#       .venv/bin/python -m llmjax.main --config=configs/shakespeare.py --workdir=/shared/runs/x
#
# Options:
#   --hosts=h1,h2,...  one process per host, started with ssh in this directory (the code
#                      and the workdir must be on a shared filesystem); the first host
#                      runs the coordinator
#   --local=N          N processes on this machine (coordinator on 127.0.0.1)
#   --port=P           coordinator port (default 12355)
#   --cpu_devices=K    give each process K fake CPU devices (testing without accelerators)
#   --log_dir=DIR      per-process logs DIR/process_<i>.log (default: a fresh temp dir)
# Process 0's output is shown live; every process's output is in its log file.
set -euo pipefail

hosts="" local_n=0 port=12355 cpu_devices=0 log_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --hosts=*) hosts="${1#*=}" ;;
    --local=*) local_n="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    --cpu_devices=*) cpu_devices="${1#*=}" ;;
    --log_dir=*) log_dir="${1#*=}" ;;
    --) shift; break ;;
    *) echo "multihost.sh: unknown option '$1' (see the header of $0 for usage)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -eq 0 ]]; then
  echo "multihost.sh: no command given; usage: $0 --local=N|--hosts=h1,h2 -- COMMAND..." >&2
  exit 2
fi
if [[ -n "$hosts" && "$local_n" -gt 0 ]] || [[ -z "$hosts" && "$local_n" -lt 1 ]]; then
  echo "multihost.sh: give exactly one of --hosts=h1,h2,... or --local=N (N >= 1)" >&2
  exit 2
fi

if [[ -n "$hosts" ]]; then
  IFS=, read -r -a host_list <<< "$hosts"
  n=${#host_list[@]}
  coordinator="${host_list[0]}:$port"
else
  n=$local_n
  coordinator="127.0.0.1:$port"
fi
log_dir="${log_dir:-$(mktemp -d "${TMPDIR:-/tmp}/llmjax-launch.XXXXXX")}"
mkdir -p "$log_dir"
echo "multihost.sh: $n processes, coordinator $coordinator, logs in $log_dir" >&2

env_for() {  # The environment of process $1, as VAR=value words.
  local vars=("LLMJAX_COORDINATOR=$coordinator" "LLMJAX_NUM_PROCESSES=$n" "LLMJAX_PROCESS_ID=$1")
  if [[ "$cpu_devices" -gt 0 ]]; then
    local xla="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$cpu_devices"
    vars+=("JAX_PLATFORMS=cpu" "XLA_FLAGS=$xla")
  fi
  printf '%q ' "${vars[@]}"
}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
}
trap 'cleanup; exit 130' INT TERM

command_words=$(printf '%q ' "$@")
for ((i = 0; i < n; i++)); do
  log="$log_dir/process_$i.log"
  : > "$log"  # Exists before the tail below starts.
  if [[ -n "$hosts" ]]; then
    # -tt: the remote process gets SIGHUP when the connection is closed.
    setsid ssh -tt -o BatchMode=yes "${host_list[$i]}" \
      "cd $(printf '%q' "$PWD") && env $(env_for "$i") $command_words" < /dev/null > "$log" 2>&1 &
  else
    setsid bash -c "exec env $(env_for "$i") $command_words" < /dev/null > "$log" 2>&1 &
  fi
  pids+=($!)
done
tail -n +1 -f --pid="${pids[0]}" "$log_dir/process_0.log" &
tail_pid=$!

status=0
remaining=$n
declare -A done_pids=()
while [[ $remaining -gt 0 ]]; do
  for ((i = 0; i < n; i++)); do
    pid=${pids[$i]}
    [[ -n "${done_pids[$pid]:-}" ]] && continue
    if ! kill -0 "$pid" 2>/dev/null; then
      code=0
      wait "$pid" || code=$?
      done_pids[$pid]=1
      remaining=$((remaining - 1))
      if [[ $code -ne 0 ]]; then
        status=$code
        echo "multihost.sh: process $i failed (exit code $code); stopping the others." >&2
        echo "---- last lines of $log_dir/process_$i.log ----" >&2
        tail -n 30 "$log_dir/process_$i.log" >&2
        echo "----" >&2
        cleanup
        wait 2>/dev/null || true
        exit "$status"
      fi
    fi
  done
  sleep 0.2
done
wait "$tail_pid" 2>/dev/null || true
exit 0
