#!/bin/sh
# StreamSpace session container: Xvnc on display :0 (no VNC auth, like the local platform;
# only the agent reaches the port), a small window manager, then the template's command.
# The command's exit ends the container, so the agent reports its exit code.
set -eu
VNC_PORT="${VNC_PORT:-5900}"
Xvnc :0 -rfbport "$VNC_PORT" -SecurityTypes None -geometry "${VNC_GEOMETRY:-1280x800}" \
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
