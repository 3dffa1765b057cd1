#!/usr/bin/env bash
# A real SLURM cluster on this host, for CI and for trying profiles/slurm (docs/clusters.md): Debian's munge,
# slurmctld and two slurmd (nodes n1 and n2, both on 127.0.0.1, ports 6818 and 6819). Each node declares the
# paper recipe's node: 64 CPUs and 8 GPUs; SlurmdParameters=config_overrides makes slurmd accept the declared shape
# on a smaller host, and the GPUs are GRES on placeholder character devices (copies of /dev/null), so SLURM
# allocates and binds them (CUDA_VISIBLE_DEVICES) exactly as it would real ones. No accounting database: job states
# come from squeue (MinJobAge keeps finished jobs listed for an hour; the plugin's --slurm-status-command squeue).
#
# Needs root (apt-get install, daemons). Idempotent: a second call with everything up and the same config returns at
# once; a changed config restarts the daemons. It refuses to overwrite a slurm.conf it did not write.
set -euo pipefail
CONF=/etc/slurm/slurm.conf
STATE=/var/lib/steer-bench-slurm   # this cluster's own state, placeholder devices and spool folders
MARK="# written by steer-bench scripts/slurm_local.sh"
fail() { echo "slurm_local.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (apt-get install and the SLURM daemons); run it with sudo"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || fail "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
    || fail "apt-get install slurmctld slurmd slurm-client munge failed"
fi

node() {  # NodeName line of a fake 8-GPU, 64-CPU node on localhost
  echo "NodeName=$1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$2 CPUs=64 Boards=1 SocketsPerBoard=2" \
       "CoresPerSocket=32 ThreadsPerCore=1 RealMemory=512000 Gres=gpu:8 State=UNKNOWN"
}
config=$(cat <<EOF
$MARK
ClusterName=steerbench
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool-%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
# no cgroups in containers: track processes by /proc, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
$(node n1 6818)
$(node n2 6819)
PartitionName=gpu Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
)
gres="NodeName=n1 Name=gpu File=$STATE/n1/gpu[0-7]
NodeName=n2 Name=gpu File=$STATE/n2/gpu[0-7]"

if [ -f "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
  fail "$CONF exists and was not written by this script: not overwriting a real cluster's config"
fi
changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$config" ] || [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$gres" ]; then
  changed=1
  mkdir -p /etc/slurm
  printf '%s\n' "$config" >"$CONF"
  printf '%s\n' "$gres" >/etc/slurm/gres.conf
fi
for n in n1 n2; do
  mkdir -p $STATE/$n $STATE/spool-$n
  for i in 0 1 2 3 4 5 6 7; do
    f=$STATE/$n/gpu$i
    [ -c "$f" ] || mknod "$f" c 1 3 || fail "mknod $f failed (GRES files must be character devices)"
  done
done
mkdir -p $STATE/ctld /var/log/slurm

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() { if alive "$1"; then kill "$(cat "$1")"; for _ in $(seq 50); do alive "$1" || return 0; sleep 0.1; done; fi; }

# munge: the key comes with the package; the socket folder does not survive a reboot or a fresh container
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || fail "munge does not answer"
fi
if [ $changed = 1 ]; then
  stop /run/slurmd-n1.pid; stop /run/slurmd-n2.pid; stop /run/slurmctld.pid
  rm -rf "${STATE:?}/ctld"/*  # the old cluster's jobs and nodes
fi
alive /run/slurmctld.pid || slurmctld -c || fail "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
for n in n1 n2; do
  alive /run/slurmd-$n.pid || slurmd -N $n || fail "slurmd -N $n did not start (see /var/log/slurm/slurmd-$n.log)"
done
for _ in $(seq 100); do
  [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -cE ' (idle|mix|alloc)$')" = 2 ] && exit 0
  sleep 0.3
done
sinfo -N >&2 || true
fail "the nodes n1 and n2 did not come up within 30 s (see /var/log/slurm/)"
