# The escape probe of tests/integration/test_docker_escape.py (bash, run as `bash -c`): tries
# what a session must not manage, prints one line `ESCAPE-PROBE {json}`, then runs its
# arguments, if any (a session keeps running). Inside a session every attempt must fail; run
# on the host as the agent's account (root), the same attempts must succeed.
#
#   VICTIM_IP VICTIM_NAME  the other session's container: its address and name (VNC 5900)
#   VICTIM_SESSION         its session id (named on its Xvnc's command line)
#   HOST_ADDR HOST_PORT    where the host publishes its VNC port (default address: the gateway)
#   SECRETS                host paths, space-separated (the agent's key, the victim's home...)
set -u

rfb() {  # whether $1:$2 answers with an RFB banner
    local banner
    banner=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -c 4 <&3' "$1" "$2" 2>/dev/null)
    if [ "$banner" = "RFB " ]; then echo true; else echo false; fi
}

gateway() {  # the default route's gateway, from /proc/net/route (hex, little-endian)
    local _ dest gw
    while read -r _ dest gw _; do
        if [ "$dest" = 00000000 ]; then
            printf '%d.%d.%d.%d' "0x${gw:6:2}" "0x${gw:4:2}" "0x${gw:2:2}" "0x${gw:0:2}"
            return
        fi
    done </proc/net/route
}

readable() {  # a JSON list of the SECRETS that could be read (files) or listed (directories)
    local path found=""
    for path in $SECRETS; do
        if cat "$path" >/dev/null 2>&1 || ls "$path" >/dev/null 2>&1; then
            found="$found\"$path\","
        fi
    done
    echo "[${found%,}]"
}

victim_processes() {  # how many visible processes name the victim session on their command line
    local cmdline count=0
    for cmdline in /proc/[0-9]*/cmdline; do
        if tr '\0' ' ' 2>/dev/null <"$cmdline" | grep -qF -- "$VICTIM_SESSION"; then
            count=$((count + 1))
        fi
    done
    echo "$count"
}

status() { sed -n "s/^$1:[[:space:]]*//p" /proc/self/status; }

host=${HOST_ADDR:-$(gateway)}
printf 'ESCAPE-PROBE {"uid": %s, "cap_eff": "%s", "cap_bnd": "%s", "no_new_privs": %s, ' \
    "$(id -u)" "$(status CapEff)" "$(status CapBnd)" "$(status NoNewPrivs)"
printf '"vnc_by_ip": %s, "vnc_by_name": %s, "host": "%s", "vnc_via_host": %s, ' \
    "$(rfb "$VICTIM_IP" 5900)" "$(rfb "$VICTIM_NAME" 5900)" "$host" "$(rfb "$host" "$HOST_PORT")"
printf '"readable": %s, "victim_processes": %s}\n' "$(readable)" "$(victim_processes)"
if [ $# -gt 0 ]; then exec "$@"; fi
