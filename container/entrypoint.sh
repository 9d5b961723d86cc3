#!/bin/sh
# The container's PID 1: take PUID/PGID (the share's owner), give /state to them, make a config
# in /config if there is none, then become the daemon (exec: SIGTERM reaches it directly).
set -eu
: "${PUID:=1000}" "${PGID:=1000}"
case "$PUID$PGID" in *[!0-9]*) echo "PUID and PGID must be numbers" >&2; exit 2 ;; esac
if [ ! -f /config/config.yaml ]; then
    cp /opt/stylebox/container/config.yaml /config/config.yaml
    chown "$PUID:$PGID" /config/config.yaml
fi
chown "$PUID:$PGID" /state  # the journal's folder; the inbox and outbox keep the share's owner
export HOME=/state
exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups \
    /opt/stylebox/.venv/bin/stylebox "$@" --config /config/config.yaml
