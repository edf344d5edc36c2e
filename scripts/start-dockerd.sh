#!/usr/bin/env bash
# Start dockerd in the background unless a Docker daemon already answers, then wait for it.
#
# Usage: scripts/start-dockerd.sh    (root; used by `install-deps.sh test` and the test fixtures)
#
#   DOCKERD_LOG            where dockerd's output goes (default /var/log/streamspace-dockerd.log)
#   DOCKERD_START_TIMEOUT  seconds to wait for `docker info` to answer (default 60)
#
# The daemon keeps running afterwards (the next run finds it); stop it with
# `kill "$(cat /var/run/docker.pid)"`.
set -euo pipefail

LOG="${DOCKERD_LOG:-/var/log/streamspace-dockerd.log}"
TIMEOUT="${DOCKERD_START_TIMEOUT:-60}"

die() {
    echo "start-dockerd: ERROR: $*" >&2
    exit 1
}

docker_answers() { docker info >/dev/null 2>&1; }

command -v docker >/dev/null 2>&1 || die "the docker command is missing (apt-get install docker.io)"
docker_answers && exit 0
command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed (apt-get install docker.io)"
((EUID == 0)) || die "no Docker daemon answers and starting one needs root"

echo "start-dockerd: starting dockerd (log: $LOG)"
mkdir -p "$(dirname "$LOG")"
setsid dockerd >>"$LOG" 2>&1 </dev/null &
pid=$!
for ((tenth = 0; tenth < TIMEOUT * 10; tenth++)); do
    docker_answers && exit 0
    if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "$LOG" >&2
        die "dockerd exited during start (log above)"
    fi
    sleep 0.1
done
tail -n 20 "$LOG" >&2
die "dockerd did not answer within ${TIMEOUT} s (log above)"
