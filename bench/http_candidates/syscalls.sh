#!/usr/bin/env bash
# Diagnostic (not part of run.sh timing): system calls per request for each
# candidate, 1 server thread, one keep-alive connection sending N sequential
# requests. Runs each server under `strace -f -c`.
#   ./syscalls.sh            (N=3000, PORT=18482)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
N=${N:-3000}
PORT=${PORT:-18482}
RESP_BODY='{"model_name":"mlp","outputs":[{"name":"probs","datatype":"FP32","shape":[1,10],"data":[0.021,0.087,0.144,0.052,0.313,0.093,0.021,0.118,0.070,0.081]}]}'
WORK=$(mktemp -d /tmp/httpcand-sys.XXXXXX)
PID=""
cleanup() {
    if [[ -n $PID ]]; then
        kill -TERM "$(cut -d' ' -f1 "/proc/$PID/task/$PID/children" 2>/dev/null)" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
make -s

client() {
    python3 - "$PORT" "$N" <<'EOF'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
body = ('{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[%s]}]}'
        % ",".join("0.%06d" % i for i in range(64))).encode()
req = (b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n" % len(body)) + body
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        time.sleep(0.1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = b""
for _ in range(n):
    s.sendall(req)
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            hdr = buf[:i].lower()
            cl = int(hdr.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(buf) >= i + 4 + cl:
                assert hdr.startswith(b"http/1.1 200"), hdr
                buf = buf[i + 4 + cl:]
                break
        buf += s.recv(65536)
s.close()
EOF
}

printf '| candidate | syscalls/request | breakdown per request |\n|---|---:|---|\n'
for cand in nginx A B C D; do
    case $cand in
    nginx)
        mkdir -p "$WORK/nginx"
        sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@PORT@|$PORT|g" -e "s|@RESP_BODY@|$RESP_BODY|" nginx.conf.in \
            >"$WORK/nginx/nginx.conf"
        cmd=(nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf") ;;
    A) cmd=(build/srv_a_epoll -p "$PORT" -t 1) ;;
    B) cmd=(build/srv_b_libevent -p "$PORT" -t 1) ;;
    C) cmd=(build/srv_c_h2o -p "$PORT" -t 1) ;;
    D) cmd=(build/srv_d_mhd -p "$PORT" -t 1) ;;
    esac
    strace -f -c -o "$WORK/$cand.strace" "${cmd[@]}" 2>/dev/null &
    PID=$!
    client
    sleep 0.3
    # Stop the traced server (strace's child); strace exits with it.
    kill -TERM "$(cut -d' ' -f1 "/proc/$PID/task/$PID/children")" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
    # Only the calls on the request path (drop startup-only calls seen < N/2 times).
    awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $NF != "total" && $4 ~ /^[0-9]+$/ && $4 >= n / 2 {
            tot += $4; s = s sprintf("%s %.2f, ", $NF, $4 / n) }
        END { sub(/, $/, "", s); printf "%.2f\t%s\n", tot / n, s }' "$WORK/$cand.strace" |
        while IFS=$'\t' read -r tot detail; do printf '| %s | %s | %s |\n' "$cand" "$tot" "$detail"; done
done
