#!/bin/sh
# The image's HEALTHCHECK: GET /health from the server in this container, exit 0 when it answers 2xx.
# Asks the plain-HTTP health listener when LUAGENT_HEALTH_LISTEN is set, else the main listener
# (LUAGENT_LISTEN, HTTPS when LUAGENT_TLS_CERT is set; the certificate names the public host, not
# 127.0.0.1, so it is not verified here).
set -eu
scheme=http
insecure=
if [ -n "${LUAGENT_HEALTH_LISTEN:-}" ]; then
    addr=$LUAGENT_HEALTH_LISTEN
else
    addr=${LUAGENT_LISTEN:-0.0.0.0:8000}
    if [ -n "${LUAGENT_TLS_CERT:-}" ]; then
        scheme=https
        insecure=--insecure
    fi
fi
port=${addr##*:}
host=${addr%:*}
case $host in
    '' | 0.0.0.0 | '*') host=127.0.0.1 ;;
    '[::]') host='[::1]' ;;
esac
exec curl --fail --silent --show-error --max-time 4 $insecure --output /dev/null "$scheme://$host:$port/health"
