#!/bin/sh
# End-to-end check of scripts/scale-out.sh: two `zq serve` processes behind nginx with
# Redis. One conversation continues across both processes, a reset and the response cache
# are shared through Redis, nginx spreads requests and passes event streams, and SIGTERM
# to the script stops every process and removes its folder. Prints one PASS/FAIL line per
# check; exits 1 if any failed.
set -u
ZQ=${ZQ_BIN:-build/zq}
MODEL=${ZQ_SERVE_MODEL:-${ZQ_BUILD:-build}/zh-chat-tiny.zq}
tmp=$(mktemp -d)
script_pid=""
failed=0

cleanup() {
    [ -z "$script_pid" ] || kill -TERM "$script_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass() { echo "PASS serve_scale_$1"; }
fail() { echo "FAIL serve_scale_$1: $2"; failed=1; }
check() {
    name=$1
    shift
    if "$@" >/dev/null; then pass "$name"; else fail "$name" "$*"; fi
}
eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', expected '$3'"; fi
}

for tool in curl jq redis-server perl "$(command -v nginx || echo /usr/sbin/nginx)"; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL serve_scale_setup: $tool is not installed (scripts/setup-deps.sh lists it)"
        exit 1
    fi
done
if [ ! -x "$ZQ" ] || [ ! -f "$MODEL" ]; then
    echo "FAIL serve_scale_setup: $ZQ or $MODEL is missing; run make first"
    exit 1
fi

ZQ_BIN="$ZQ" scripts/scale-out.sh -n 2 -m "$MODEL" -- --threads 1 --parallel 2 \
    >"$tmp/out" 2>"$tmp/err" &
script_pid=$!
i=0
while [ $i -lt 600 ] && ! grep -q 'ready at' "$tmp/out" 2>/dev/null &&
    kill -0 "$script_pid" 2>/dev/null; do
    sleep 0.05
    i=$((i + 1))
done
if ! grep -q 'ready at' "$tmp/out"; then
    echo "FAIL serve_scale_start: scale-out.sh did not get ready; its output:"
    cat "$tmp/out" "$tmp/err"
    exit 1
fi
pass start
LB=$(sed -n 's/^zq scale-out: ready at //p' "$tmp/out")
B1=$(sed -n 's/^zq scale-out: backend 1 at \([^ ]*\).*/\1/p' "$tmp/out")
B2=$(sed -n 's/^zq scale-out: backend 2 at \([^ ]*\).*/\1/p' "$tmp/out")
folder=$(sed -n 's/^zq scale-out: backend 1 at .*(log \(.*\)\/zq-1\.log)$/\1/p' "$tmp/out")

post() {
    status=$(curl -s -o "$tmp/body" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "$2" "$1")
}
get() { status=$(curl -s -o "$tmp/body" -w '%{http_code}' "$1"); }
body() { jq -r "$1" "$tmp/body"; }
metric() { curl -s "$1/metrics" | awk -v name="$2" '$1 == name { print $2 }'; }

# ---- one conversation over both processes ---------------------------------------------------
post "$B1/chat" '{"prompt":"你好","session_id":"across","max_new_tokens":6}'
eq turn1_backend1 "$status" 200
first_reply=$(body .reply)
post "$B2/chat" '{"prompt":"你是谁","session_id":"across","max_new_tokens":6}'
eq turn2_backend2 "$status" 200
get "$B1/chat/history?session_id=across"
eq history_shared "$(body '.exchanges | length') $(body '.exchanges[1].user')" "2 你是谁"
eq history_first_reply "$(body '.exchanges[0].assistant')" "$first_reply"
post "$LB/chat" '{"prompt":"再见","session_id":"across","max_new_tokens":6}'
eq turn3_through_nginx "$status" 200
get "$LB/chat/history?session_id=across"
eq history_three "$(body '.exchanges | length')" 3
post "$B2/chat/reset?session_id=across" ''
get "$B1/chat/history?session_id=across"
eq reset_shared "$(body '.exchanges | length')" 0

# ---- the cache is shared ------------------------------------------------------------------------
greedy='{"messages":[{"role":"user","content":"早上好"}],"max_tokens":10,"temperature":0}'
post "$B1/v1/chat/completions" "$greedy"
from_b1=$(body '.choices[0].message.content')
post "$B2/v1/chat/completions" "$greedy"
eq cache_shared_reply "$(body '.choices[0].message.content')" "$from_b1"
eq cache_shared_hit "$(metric "$B2" zq_cache_hits_total)" 1

# ---- nginx spreads requests and passes streams ----------------------------------------------
before1=$(metric "$B1" 'zq_request_duration_seconds_count{endpoint="/v1/models"}')
before2=$(metric "$B2" 'zq_request_duration_seconds_count{endpoint="/v1/models"}')
for k in 1 2 3 4; do
    curl -s -o /dev/null "$LB/v1/models"
done
after1=$(metric "$B1" 'zq_request_duration_seconds_count{endpoint="/v1/models"}')
after2=$(metric "$B2" 'zq_request_duration_seconds_count{endpoint="/v1/models"}')
eq spread_total $((${after1:-0} - ${before1:-0} + ${after2:-0} - ${before2:-0})) 4
check spread_backend1 test "${after1:-0}" -gt "${before1:-0}"
check spread_backend2 test "${after2:-0}" -gt "${before2:-0}"
curl -s -N -H 'Content-Type: application/json' \
    --data-binary '{"messages":[{"role":"user","content":"你好"}],"max_tokens":8,"stream":true}' \
    "$LB/v1/chat/completions" >"$tmp/lb.sse"
eq stream_through_nginx "$(grep '^data: ' "$tmp/lb.sse" | tail -n 1)" "data: [DONE]"

# ---- SIGTERM stops everything -------------------------------------------------------------------
kill -TERM "$script_pid"
wait "$script_pid"
eq stop_exit_code $? 0
script_pid=""
for target in "nginx $LB" "backend1 $B1" "backend2 $B2"; do
    curl -s -o /dev/null "${target#* }/health"
    eq "stopped_${target%% *}" $? 7
done
check folder_removed test ! -e "$folder"

exit $failed
