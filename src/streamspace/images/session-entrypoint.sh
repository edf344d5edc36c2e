#!/bin/sh
# StreamSpace session container: Xvnc on display :0, a small window manager, then the
# template's command. The command's exit ends the container, so the agent reports its exit
# code. With STREAMSPACE_VNC_PASSWORD (the hex of a vncpasswd file, which the agent makes per
# session and answers for in its tunnel) Xvnc asks for that password; without it, for none.
set -eu
VNC_PORT="${VNC_PORT:-5900}"
security="-SecurityTypes None"
if [ -n "${STREAMSPACE_VNC_PASSWORD:-}" ]; then
    hex=$STREAMSPACE_VNC_PASSWORD
    if [ "${#hex}" -ne 16 ] || [ -n "$(printf %s "$hex" | tr -d 0-9a-f)" ]; then
        echo "streamspace-session: STREAMSPACE_VNC_PASSWORD is not 16 hex digits" >&2
        exit 1
    fi
    octal=""
    while [ -n "$hex" ]; do # dash's printf knows octal escapes only
        rest=${hex#??}
        octal="$octal\\$(printf '%03o' "0x${hex%"$rest"}")"
        hex=$rest
    done
    (umask 077 && printf "$octal" >/tmp/.vnc-password)
    security="-SecurityTypes VncAuth -PasswordFile /tmp/.vnc-password"
    unset STREAMSPACE_VNC_PASSWORD
fi
# $security is two or four words, split on purpose.
# shellcheck disable=SC2086
Xvnc :0 -rfbport "$VNC_PORT" $security -geometry "${VNC_GEOMETRY:-1280x800}" \
    -depth 24 -desktop "${STREAMSPACE_SESSION_ID:-streamspace}" -AlwaysShared \
    -nolisten tcp &
export DISPLAY=:0
tries=0
until [ -S /tmp/.X11-unix/X0 ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 500 ] || ! kill -0 $! 2>/dev/null; then
        echo "streamspace-session: Xvnc did not start" >&2
        exit 1
    fi
    sleep 0.02
done
evilwm >/dev/null 2>&1 &
cd "$HOME"
exec "$@"
