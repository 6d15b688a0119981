#!/bin/bash
# ovs-start.sh: the sluice-node DaemonSet's `openvswitch` container (docs/deploy.md).
#
#   ovs-start.sh          create or upgrade conf.db, run ovsdb-server and ovs-vswitchd
#                         as children (not --detach: the container lives as long as
#                         they do), stop both on SIGTERM, exit when either dies
#   ovs-start.sh health   exit 0 when both daemons answer on their control sockets
#
# Datapath: a container cannot load kernel modules, so nothing here tries. When the
# host has the openvswitch module loaded (`modprobe openvswitch`), the controller
# (datapathType: auto) creates br-int with the kernel `system` datapath; otherwise it
# uses the `netdev` userspace datapath, which works everywhere but forwards in
# ovs-vswitchd's threads (slower, more CPU). The choice is logged below.
#
# Userspace TSO (netdev datapath only): SLUICE_USERSPACE_TSO=auto (the default) sets
# `other_config:userspace-tso-enable` from the controller configuration SLUICE_CONFIG:
# on in routing and underlay mode, off in overlay and hybrid, whose tunnel port OVS 3.1
# cannot feed offloaded packets (controller/tso.py). `true`/`false` force it. It is set
# before ovs-vswitchd starts because OVS reads it only then.
#
# The OVS tools read OVS_RUNDIR, OVS_DBDIR and OVS_LOGDIR, exported here, so
# `ovs-vsctl` and `ovs-appctl` in this container (or on the host, same hostPaths) agree.
set -euo pipefail

export OVS_RUNDIR=${OVS_RUNDIR:-/var/run/openvswitch}
export OVS_DBDIR=${OVS_DBDIR:-/etc/openvswitch}
export OVS_LOGDIR=${OVS_LOGDIR:-/var/log/openvswitch}
schema=${OVS_SCHEMA:-/usr/share/openvswitch/vswitch.ovsschema}
db=$OVS_DBDIR/conf.db
sock=$OVS_RUNDIR/db.sock
tso=${SLUICE_USERSPACE_TSO:-auto}
config=${SLUICE_CONFIG:-/etc/sluice/controller.yaml}
python=${SLUICE_PYTHON:-python3}

log() { echo "ovs-start: $*" >&2; }

health() {
    ovs-appctl -T 5 -t ovsdb-server version >/dev/null &&
        ovs-appctl -T 5 -t ovs-vswitchd version >/dev/null
}

prepare_db() {
    mkdir -p "$OVS_RUNDIR" "$OVS_DBDIR" "$OVS_LOGDIR"
    if [ ! -s "$db" ]; then
        log "creating $db"
        ovsdb-tool create "$db" "$schema"
    elif [ "$(ovsdb-tool needs-conversion "$db" "$schema")" = yes ]; then
        log "converting $db to schema $(ovsdb-tool schema-version "$schema")"
        ovsdb-tool convert "$db" "$schema"
    fi
}

init_db() {
    # What ovs-ctl does at start: db-version, ovs-version, a persistent system-id
    # (kept in conf.db, a hostPath), and the hostname.
    local id
    ovs-vsctl --no-wait init
    ovs-vsctl --no-wait set Open_vSwitch . \
        db-version="$(ovsdb-tool schema-version "$schema")" \
        ovs-version="$(ovs-vswitchd --version | awk '/Open vSwitch/{print $NF}')" \
        external-ids:hostname="${NODE_NAME:-$(uname -n)}"
    if ! ovs-vsctl --no-wait get Open_vSwitch . external-ids:system-id >/dev/null 2>&1; then
        id=$(cat /proc/sys/kernel/random/uuid)
        ovs-vsctl --no-wait set Open_vSwitch . external-ids:system-id="$id"
    fi
}

set_userspace_tso() {
    local want=$tso
    if [ "$want" = auto ]; then
        # why the controller's own code: the same parser and mode rules as the controller.
        if ! want=$("$python" -m controller.tso "$config" 2>/dev/null); then
            log "cannot read the mode from $config: userspace TSO off"
            want=false
        fi
    fi
    case "$want" in
    true | false) ;;
    *)
        log "SLUICE_USERSPACE_TSO=$tso: expected auto, true or false"
        return 1
        ;;
    esac
    ovs-vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable="$want"
    log "userspace TSO $want (SLUICE_USERSPACE_TSO=$tso)"
}

wait_for_db() {
    local i
    for i in $(seq 1 100); do
        [ -S "$sock" ] && ovs-vsctl --no-wait --timeout=2 show >/dev/null 2>&1 && return 0
        kill -0 "$1" 2>/dev/null || { log "ovsdb-server exited"; return 1; }
        sleep 0.1
    done
    log "ovsdb-server did not answer on $sock"
    return 1
}

stop() {
    # why: `exit` without --cleanup leaves the kernel datapath and its ports in
    # place, so pods keep their ports across a restart of this container.
    log "stopping"
    if [ -n "${vswitchd:-}" ]; then
        ovs-appctl -T 10 -t ovs-vswitchd exit >/dev/null 2>&1 || kill "$vswitchd" 2>/dev/null || true
    fi
    if [ -n "${ovsdb:-}" ]; then
        ovs-appctl -T 10 -t ovsdb-server exit >/dev/null 2>&1 || kill "$ovsdb" 2>/dev/null || true
    fi
    wait || true
}

main() {
    trap 'stop; exit 0' TERM INT
    prepare_db
    if [ -d /sys/module/openvswitch ]; then
        log "openvswitch kernel module loaded: datapathType auto picks the system datapath"
    else
        log "openvswitch kernel module not loaded (a container cannot load it):" \
            "datapathType auto picks the netdev userspace datapath"
    fi

    ovsdb-server "$db" \
        --remote=punix:"$sock" \
        --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
        --pidfile="$OVS_RUNDIR/ovsdb-server.pid" \
        --log-file="$OVS_LOGDIR/ovsdb-server.log" \
        -vconsole:info -vfile:info -vsyslog:off &
    ovsdb=$!
    wait_for_db "$ovsdb" || { stop; exit 1; }
    init_db
    set_userspace_tso || { stop; exit 1; }

    # ovs-vswitchd needs a few descriptors per port: ovs-ctl's limit, else the hard one.
    ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    ovs-vswitchd unix:"$sock" \
        --pidfile="$OVS_RUNDIR/ovs-vswitchd.pid" \
        --log-file="$OVS_LOGDIR/ovs-vswitchd.log" \
        -vconsole:info -vfile:info -vsyslog:off &
    vswitchd=$!
    log "ovsdb-server pid $ovsdb, ovs-vswitchd pid $vswitchd"

    local rc=0
    wait -n "$ovsdb" "$vswitchd" || rc=$?
    log "a daemon exited (status $rc)"
    stop
    exit 1
}

case "${1:-run}" in
run) main ;;
health) health ;;
*)
    echo "usage: ovs-start.sh [run|health]" >&2
    exit 2
    ;;
esac
