#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (slurmctld + slurmd on 127.0.0.1, munge
# authentication), to run launch/slurm.sbatch under a real SLURM without a cluster.
#
#   bash launch/slurm_local.sh install   # apt-get install slurm-wlm munge (Debian/Ubuntu, root)
#   bash launch/slurm_local.sh start     # write the config, start the daemons, wait for the node
#   bash launch/slurm_local.sh test      # start, then tests/slurm_test.py (2 tasks x 4 CPU devices)
#   bash launch/slurm_local.sh stop      # stop the daemons started here
#
# Everything lives in $SLURM_LOCAL_DIR (default /tmp/llmjax-slurm): slurm.conf, state,
# logs, pid files. SLURM's client commands find the cluster through SLURM_CONF:
#   export SLURM_CONF=/tmp/llmjax-slurm/slurm.conf
#   sbatch --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 launch/slurm.sbatch ...
# The daemons run as root (the user that starts them), which needs root.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${SLURM_LOCAL_DIR:-/tmp/llmjax-slurm}"
export SLURM_CONF="$dir/slurm.conf"
host="$(hostname -s)"

need() {
  for cmd in slurmctld slurmd munged sbatch; do
    if ! command -v "$cmd" > /dev/null; then
      echo "slurm_local.sh: $cmd not found; run 'bash launch/slurm_local.sh install' (root)" >&2
      exit 3
    fi
  done
}

running() { sinfo -h -o %T 2> /dev/null | grep -qE '^(idle|mixed|allocated)'; }

write_config() {
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  # CPUs as the node reports them; the whole node is one partition, jobs may share it.
  local cpus memory
  cpus="$(nproc)"
  memory="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  cat > "$SLURM_CONF" << EOF
ClusterName=llmjax-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}

start() {
  need
  if running; then
    echo "slurm_local.sh: already running (SLURM_CONF=$SLURM_CONF)"
    return
  fi
  write_config
  if ! munge -n > /dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    [[ -f /etc/munge/munge.key ]] || mungekey --create > /dev/null 2>&1 || \
      dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2> /dev/null
    chown -R "$(id -un)" /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 400 /etc/munge/munge.key
    munged --force
  fi
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF" -N "$host"
  for _ in $(seq 60); do
    if running; then
      echo "slurm_local.sh: SLURM is up on $host; export SLURM_CONF=$SLURM_CONF"
      return
    fi
    scontrol update nodename="$host" state=resume > /dev/null 2>&1 || true
    sleep 1
  done
  echo "slurm_local.sh: the node did not come up in 60 s; logs: $dir/slurmctld.log," \
    "$dir/slurmd.log" >&2
  sinfo >&2 || true
  exit 1
}

stop() {
  for pid_file in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    if [[ -f "$pid_file" ]]; then
      kill "$(cat "$pid_file")" 2> /dev/null || true
      rm -f "$pid_file"
    fi
  done
  echo "slurm_local.sh: stopped (munged keeps running)"
}

case "${1:-}" in
  install)
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge
    ;;
  start) start ;;
  stop) stop ;;
  test)
    start
    PYTHON="${PYTHON:-$root/.venv/bin/python}"
    cd "$root"
    LLMJAX_SLURM_TEST=1 exec "$PYTHON" -m pytest -q -n 0 -s -p no:cacheprovider \
      tests/slurm_test.py
    ;;
  *)
    echo "usage: bash launch/slurm_local.sh install|start|test|stop" >&2
    exit 2
    ;;
esac
