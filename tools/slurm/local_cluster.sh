#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying gemseg's srun/sbatch support (and for
# tests/test_slurm.py, which skips when no Slurm node answers). Not for production.
#
#   sudo bash tools/slurm/local_cluster.sh          # configure + start munged, slurmctld, slurmd; wait for "idle"
#   sudo bash tools/slurm/local_cluster.sh status   # sinfo, and which daemons run
#   sudo bash tools/slurm/local_cluster.sh stop     # stop the three daemons this script started
#
# Needs root and the Debian/Ubuntu packages:  apt-get install -y slurm-wlm munge
# Idempotent: running it again with the cluster up only checks it (and restarts the Slurm daemons
# if the generated slurm.conf changed). No cgroups (containers often lack them): processes are
# tracked with proctrack/linuxproc, tasks are not bound (task/none), no accounting.
#
# Environment: LOCAL_SLURM_CPUS (default: nproc), LOCAL_SLURM_MEM_MB (default 1024),
# LOCAL_SLURM_CONF_DIR (default /etc/slurm), LOCAL_SLURM_WAIT_S (default 60).
set -euo pipefail

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

ACTION=${1:-start}
CONF_DIR=${LOCAL_SLURM_CONF_DIR:-/etc/slurm}
CONF=$CONF_DIR/slurm.conf
CPUS=${LOCAL_SLURM_CPUS:-$(nproc)}
MEM_MB=${LOCAL_SLURM_MEM_MB:-1024}
WAIT_S=${LOCAL_SLURM_WAIT_S:-60}
NODE=$(hostname -s)
SPOOL=/var/spool/slurm-local
LOGS=/var/log/slurm-local
RUN=/run/slurm-local

[ "$(id -u)" = 0 ] || die "cannot work: needs root (run: sudo bash $0)"
for b in munged slurmctld slurmd sinfo srun scontrol; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || \
        die "cannot work: '$b' not found; install Slurm first: apt-get install -y slurm-wlm munge"
done
export PATH=/usr/sbin:/usr/bin:$PATH

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {  # pidfile: stop that process only
    if pid_alive "$1"; then
        kill "$(cat "$1")"
        for _ in $(seq 50); do pid_alive "$1" || break; sleep 0.2; done
    fi
    rm -f "$1"
}

status() {
    for d in munged slurmctld slurmd; do
        if pid_alive "$RUN/$d.pid"; then echo "$d: running (pid $(cat "$RUN/$d.pid"))"; else echo "$d: not running"; fi
    done
    sinfo 2>&1 || true
}

case "$ACTION" in
    stop)
        stop_daemon "$RUN/slurmd.pid"; stop_daemon "$RUN/slurmctld.pid"; stop_daemon "$RUN/munged.pid"
        echo "local_cluster.sh: stopped"; exit 0 ;;
    status) status; exit 0 ;;
    start) ;;
    *) die "unknown action '$ACTION' (start | status | stop)" ;;
esac

mkdir -p "$CONF_DIR" "$SPOOL/ctld" "$SPOOL/d" "$LOGS" "$RUN"

# -- munge: the key, its directories, the daemon ------------------------------------------------
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/log/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    stop_daemon "$RUN/munged.pid"
    rm -f /run/munge/munge.socket.2 /run/munge/munged.pid
    runuser -u munge -- munged || die "cannot work: munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$RUN/munged.pid"
    munge -n | unmunge >/dev/null || die "cannot work: munge does not answer (see /var/log/munge/munged.log)"
fi

# -- slurm.conf ---------------------------------------------------------------------------------
NEW_CONF=$(cat <<EOF
# Written by gemseg tools/slurm/local_cluster.sh: a one-node cluster on $NODE, no cgroups.
ClusterName=gemseg-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    [ -f "$CONF" ] && ! grep -q "local_cluster.sh" "$CONF" && cp "$CONF" "$CONF.before-local-cluster"
    printf '%s\n' "$NEW_CONF" > "$CONF"
    CHANGED=1
fi

if [ "$CHANGED" = 1 ]; then
    stop_daemon "$RUN/slurmd.pid"; stop_daemon "$RUN/slurmctld.pid"
fi

# -- the daemons --------------------------------------------------------------------------------
if ! pid_alive "$RUN/slurmctld.pid"; then
    slurmctld -f "$CONF" || die "cannot work: slurmctld did not start (see $LOGS/slurmctld.log)"
fi
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || die "cannot work: slurmctld does not answer (see $LOGS/slurmctld.log)"
if ! pid_alive "$RUN/slurmd.pid"; then
    slurmd -f "$CONF" || die "cannot work: slurmd did not start (see $LOGS/slurmd.log; debug: slurmd -D -vvv)"
fi

# -- wait until the node takes jobs -------------------------------------------------------------
state=""
for _ in $(seq $((WAIT_S * 2))); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
    case "$state" in idle|mixed|allocated) break ;; esac
    case "$state" in drain*|down*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;; esac
    sleep 0.5
done
case "$state" in
    idle|mixed|allocated) echo "local_cluster.sh: Slurm cluster up: node $NODE ($CPUS CPUs, partition debug) is $state" ;;
    *) die "cannot work: node $NODE is '${state:-not listed}' after ${WAIT_S}s (see $LOGS/slurmd.log, $LOGS/slurmctld.log; scontrol show node $NODE)" ;;
esac
