#!/usr/bin/env bash
# HTTP-layer candidate benchmark (bench only; nothing here is part of ortserve).
#
#   ./run.sh            build, functional checks, 3 interleaved rounds, table
#
# Environment knobs:
#   ROUNDS=3  DURATION=10  PORT=18481
#   C1_ALL=0    also run the -c1 load against the 2-thread servers (+2 min);
#               by default -c1 runs only against 1-thread servers, since one
#               connection is served by one thread anyway.
#   SKIP_FUNC=0 skip the functional/pipelining/memory checks
#
# Per round the order is: nginx, A1, B1, C1, D1, A2, B2, C2, D2 (Xn = n server
# threads), and for each server: wrk -t1 -c1, -t2 -c16, -t2 -c64, all with
# --latency and the post.lua script. Raw numbers go to results/raw.tsv, the
# median table to results/table.md (and stdout).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
PORT=${PORT:-18481}
C1_ALL=${C1_ALL:-0}
SKIP_FUNC=${SKIP_FUNC:-0}
BIN=$HERE/build
RES=$HERE/results
URL="http://127.0.0.1:$PORT/v2/models/mlp/infer"
RESP_BODY='{"model_name":"mlp","outputs":[{"name":"probs","datatype":"FP32","shape":[1,10],"data":[0.021,0.087,0.144,0.052,0.313,0.093,0.021,0.118,0.070,0.081]}]}'

WORK=$(mktemp -d /tmp/httpcand.XXXXXX)
SERVER_PID=""   # the process we started (nginx: the master)
MEASURE_PID=""  # the process that serves (nginx: the worker)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        # nginx: the master reaps its worker before exiting; make sure.
        if [[ -n "$MEASURE_PID" && "$MEASURE_PID" != "$SERVER_PID" ]] && kill -0 "$MEASURE_PID" 2>/dev/null; then
            sleep 0.5
            kill -TERM "$MEASURE_PID" 2>/dev/null || true
        fi
    fi
    SERVER_PID=""
    MEASURE_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

start_server() { # cand threads
    local cand=$1 threads=$2
    if port_open; then
        echo "port $PORT is already in use" >&2
        exit 1
    fi
    case $cand in
    nginx)
        local p=$WORK/nginx
        rm -rf "$p" && mkdir -p "$p"
        sed -e "s|@PREFIX@|$p|g" -e "s|@PORT@|$PORT|g" -e "s|@RESP_BODY@|$RESP_BODY|" nginx.conf.in >"$p/nginx.conf"
        nginx -p "$p" -c "$p/nginx.conf" 2>>"$WORK/nginx.log" &
        ;;
    A) "$BIN/srv_a_epoll" -p "$PORT" -t "$threads" 2>>"$WORK/A.log" & ;;
    B) "$BIN/srv_b_libevent" -p "$PORT" -t "$threads" 2>>"$WORK/B.log" & ;;
    C) "$BIN/srv_c_h2o" -p "$PORT" -t "$threads" 2>>"$WORK/C.log" & ;;
    D) "$BIN/srv_d_mhd" -p "$PORT" -t "$threads" 2>>"$WORK/D.log" & ;;
    esac
    SERVER_PID=$!
    MEASURE_PID=$SERVER_PID
    for _ in $(seq 50); do
        port_open && break
        sleep 0.1
    done
    port_open || { echo "$cand did not start" >&2; exit 1; }
    if [[ $cand == nginx ]]; then
        MEASURE_PID=$(cat "/proc/$SERVER_PID/task/$SERVER_PID/children")
        MEASURE_PID=${MEASURE_PID%% *}
    fi
}

run_wrk() { # round cand threads wrk_threads conns
    local round=$1 cand=$2 threads=$3 wt=$4 conns=$5 out
    out=$WORK/wrk.$round.$cand$threads.c$conns.txt
    timeout $((DURATION + 20)) wrk -t"$wt" -c"$conns" -d"${DURATION}s" --latency -s post.lua "$URL" >"$out" 2>&1 || true
    local line
    line=$(grep '^RESULT ' "$out" || true)
    if [[ -z "$line" ]]; then
        log "wrk produced no RESULT for $cand$threads c$conns:"
        cat "$out" >&2
        return
    fi
    # RESULT k=v ... -> TSV row
    awk -v r="$round" -v c="$cand" -v t="$threads" -v n="$conns" '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        err = v["err_connect"] + v["err_read"] + v["err_write"] + v["err_status"] + v["err_timeout"]
        printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r, c, t, n, v["rps"], v["p50_us"], v["p99_us"], err
    }' <<<"$line" >>"$RES/raw.tsv"
    log "  $cand t=$threads c=$conns: $(awk '{print $4, $5, $6}' <<<"$line")"
}

mkdir -p "$RES"
log "building"
make -s
{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)  cpus: $(nproc)  model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    dpkg-query -W -f='${Package} ${Version}\n' nginx wrk libhttp-parser-dev libevent-dev libh2o-evloop-dev \
        libmicrohttpd-dev 2>/dev/null
    echo "duration=${DURATION}s rounds=$ROUNDS c1_all=$C1_ALL"
} >"$RES/env.txt"

if [[ $SKIP_FUNC != 1 ]]; then
    log "functional checks (pipelining, split, large, chunked, memory/conn)"
    : >"$RES/functest.txt"
    for cand in nginx A B C D; do
        start_server "$cand" 1
        timeout 120 python3 functest.py "$cand" "$PORT" "$MEASURE_PID" | tee -a "$RES/functest.txt" | grep '^SUMMARY' >&2 || true
        stop_server
    done
fi

CONFIGS=("nginx 1" "A 1" "B 1" "C 1" "D 1" "A 2" "B 2" "C 2" "D 2")
runs=0
for cfg in "${CONFIGS[@]}"; do
    set -- $cfg
    if [[ $2 == 1 || $C1_ALL == 1 ]]; then runs=$((runs + 3)); else runs=$((runs + 2)); fi
done
log "load: $ROUNDS rounds x $runs runs x ${DURATION}s = ~$((ROUNDS * runs * DURATION / 60)) min"

printf 'round\tcand\tthreads\tconns\trps\tp50_us\tp99_us\terrors\n' >"$RES/raw.tsv"
for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS"
    for cfg in "${CONFIGS[@]}"; do
        set -- $cfg
        cand=$1 threads=$2
        start_server "$cand" "$threads"
        if [[ $threads == 1 || $C1_ALL == 1 ]]; then
            run_wrk "$round" "$cand" "$threads" 1 1
        fi
        run_wrk "$round" "$cand" "$threads" 2 16
        run_wrk "$round" "$cand" "$threads" 2 64
        stop_server
        sleep 0.5
    done
done

for f in "$WORK"/[ABCD].log; do
    [[ -s $f ]] && { echo "--- $(basename "$f")"; cat "$f"; }
done >"$RES/server-stats.txt"
python3 report.py "$RES/raw.tsv" "$RES/functest.txt" | tee "$RES/table.md"
