#!/bin/bash
# healthcheck — exits 0 when ortserve answers 200 on GET /v2/health/ready, 1 otherwise.
#
# The container image's HEALTHCHECK. It needs nothing but bash (its /dev/tcp redirection), so the
# image carries no curl or wget. It asks the port and address ortserve is configured with:
#   ORTSERVE_PORT   (default 8000)
#   ORTSERVE_HOST   (default 127.0.0.1; the wildcard addresses 0.0.0.0 and :: are asked on loopback)
# Set the port with ORTSERVE_PORT rather than --port so that this script sees it. A connection that
# hangs is ended by the HEALTHCHECK --timeout; a response that stalls, by `read -t`.
set -u
port=${ORTSERVE_PORT:-8000}
host=${ORTSERVE_HOST:-127.0.0.1}
case $host in
0.0.0.0 | "") host=127.0.0.1 ;;
:: | "[::]") host=::1 ;;
esac
{ exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || exit 1
printf 'GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 2>/dev/null || exit 1
IFS=' ' read -r -t 5 _ status _ <&3 || exit 1
[ "$status" = 200 ]
