#!/bin/sh
# serve_bench.sh - measures `zq serve` on loopback with bench/serve_load.c: requests/s,
# tokens/s, p50/p99 latency and time to first token at concurrency 1, 4 and 16, with dynamic
# batching (--parallel 16) and without (--no-batching). Every request streams exactly
# MAX_TOKENS tokens (ignore_eos) with a fixed seed, and the response cache is off, so both
# modes do the same work. Writes bench/SERVE_RESULTS.md (OUT=file to change).
#
# usage: bench/serve_bench.sh            (16, 32 and 64 requests per concurrency level)
#        REQUESTS_PER_CLIENT=2 bench/serve_bench.sh   (fewer requests, for a quick look)
# Environment: ZQ_BIN (build/zq), MODEL (build/zh-chat-tiny.zq), THREADS (server threads;
# default: physical cores), MAX_TOKENS (32), OUT (bench/SERVE_RESULTS.md).
set -eu

ZQ=${ZQ_BIN:-build/zq}
MODEL=${MODEL:-build/zh-chat-tiny.zq}
THREADS=${THREADS:-}
MAX_TOKENS=${MAX_TOKENS:-32}
PER_CLIENT=${REQUESTS_PER_CLIENT:-4}
OUT=${OUT:-bench/SERVE_RESULTS.md}
LEVELS="1 4 16"

[ -x "$ZQ" ] && [ -f "$MODEL" ] || { echo "serve_bench: run make first ($ZQ, $MODEL)" >&2; exit 1; }
tmp=$(mktemp -d)
server_pid=""
cleanup() {
    [ -z "$server_pid" ] || kill -TERM "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

cc -O2 -pthread -o "$tmp/serve_load" bench/serve_load.c -lm

# start_server ARGS...: starts zq serve on a free port; sets port and server_pid.
start_server() {
    "$ZQ" serve -m "$MODEL" --port 0 ${THREADS:+--threads "$THREADS"} --cache-size 0 \
        --queue 256 --no-access-log "$@" 2>"$tmp/server.log" &
    server_pid=$!
    port=""
    tries=0
    while [ -z "$port" ] && [ $tries -lt 400 ] && kill -0 "$server_pid" 2>/dev/null; do
        sleep 0.05
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$|\1|p' \
            "$tmp/server.log" 2>/dev/null)
        tries=$((tries + 1))
    done
    tries=0
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
        tries=$((tries + 1))
        [ $tries -lt 400 ] || { cat "$tmp/server.log" >&2; exit 1; }
        sleep 0.05
    done
}

stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=""
}

load=$(cut -d' ' -f1 /proc/loadavg)
: >"$tmp/results.jsonl"
for mode in batching no-batching; do
    if [ "$mode" = batching ]; then start_server --parallel 16; else start_server --no-batching; fi
    "$tmp/serve_load" "$port" 1 2 "$MAX_TOKENS" >/dev/null # warm-up
    for c in $LEVELS; do
        line=$("$tmp/serve_load" "$port" "$c" $((c * PER_CLIENT)) "$MAX_TOKENS")
        echo "$mode $line" >&2
        echo "$line" | sed "s/^{/{\"mode\":\"$mode\",/" >>"$tmp/results.jsonl"
    done
    stop_server
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes)"
fi
{
    echo "# zq serve benchmark"
    echo
    echo "Measured by \`bench/serve_bench.sh\` on $(date -u +%Y-%m-%d) at commit $commit:"
    echo "$cpu, $(nproc) logical CPUs, server --threads ${THREADS:-not set (physical cores)}, model"
    echo "\`$(basename "$MODEL")\`. Load from \`bench/serve_load.c\` on the same machine over"
    echo "loopback: closed loop, each client sends its next request when the last one ends;"
    echo "each request streams exactly $MAX_TOKENS tokens (ignore_eos, temperature 0.8, seed ="
    echo "request index), the response cache is off. Latency runs from sending the request to"
    echo "the end of the stream; time to first token (TTFT) to the first event with content."
    echo "Percentiles are nearest-rank over $PER_CLIENT requests per client, so p99 is close to"
    echo "the maximum. The load generator shares the CPUs with the server, and other work on"
    echo "the machine changes the numbers: the 1-minute load average was $load before the run."
    echo
    echo "| mode | clients | requests | errors | requests/s | tokens/s | p50 latency ms | p99 latency ms | p50 TTFT ms | p99 TTFT ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    jq -r '"| \(.mode) | \(.concurrency) | \(.requests) | \(.errors) | \(.requests_per_s) | \(.tokens_per_s) | \(.latency_p50_ms) | \(.latency_p99_ms) | \(.ttft_p50_ms) | \(.ttft_p99_ms) |"' \
        "$tmp/results.jsonl"
    echo
    echo "\"batching\" is \`--parallel 16\`: one scheduler step decodes a token for every"
    echo "active request with one batched forward pass. \"no-batching\" is \`--no-batching\`:"
    echo "requests wait in the queue and run one at a time."
} >"$OUT"
echo "serve_bench: wrote $OUT" >&2
