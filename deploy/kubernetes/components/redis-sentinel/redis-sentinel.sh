#!/bin/sh
# Starts one role of a streamspace-redis-node pod: `redis` or `sentinel`.
# Both ask the Sentinels for the current master first, so a pod that restarts after a
# failover rejoins as a replica of the new master instead of claiming to be the master.
set -eu
SELF="${HOSTNAME:-$(hostname)}.streamspace-redis-node"
FIRST="streamspace-redis-node-0.streamspace-redis-node"

current_master() {
    for i in 0 1 2; do
        host="streamspace-redis-node-$i.streamspace-redis-node"
        [ "$host" = "$SELF" ] && continue
        answer=$(timeout 3 redis-cli -h "$host" -p 26379 \
            sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || true
        if [ -n "$answer" ]; then
            echo "$answer"
            return
        fi
    done
    # No Sentinel knows a master: the very first start, when pod 0 becomes it.
    echo "$FIRST"
}

MASTER=$(current_master)
case "$1" in
redis)
    # No snapshots: the hub's keys are re-created by the API replicas (the database is
    # the truth), so a replica that lost its data just syncs again.
    set -- --save "" --appendonly no --replica-announce-ip "$SELF"
    if [ "$MASTER" != "$SELF" ]; then
        set -- "$@" --replicaof "$MASTER" 6379
    fi
    exec redis-server "$@"
    ;;
sentinel)
    # Sentinel rewrites its configuration file, so it lives in the pod's writable volume.
    cat >/sentinel/sentinel.conf <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
sentinel monitor mymaster $MASTER 6379 2
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 60000
sentinel parallel-syncs mymaster 1
CONF
    exec redis-server /sentinel/sentinel.conf --sentinel
    ;;
*)
    echo "usage: $0 redis|sentinel" >&2
    exit 2
    ;;
esac
