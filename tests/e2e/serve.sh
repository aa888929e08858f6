#!/bin/sh
# End-to-end checks of `zq serve` over real HTTP on loopback with curl and jq. They cover
# both chat APIs, SSE framing, sessions, every rejected input and authentication. They
# compare batched requests with the same requests run alone, and check the response cache,
# the word filter, metrics, the access log, a full queue, clients that disconnect, and
# graceful shutdown. Each server listens on a free port (--port 0, read back from its log)
# and is killed on exit. Waits poll the server's state (health, metrics) with a bound
# instead of sleeping for a fixed time. Prints one PASS/FAIL line per check; exits 1 if
# any failed.
set -u
ZQ=${ZQ_BIN:-build/zq}
MODEL=${ZQ_SERVE_MODEL:-${ZQ_BUILD:-build}/zh-chat-tiny.zq}
tmp=$(mktemp -d)
servers=""
failed=0

cleanup() {
    for pid in $servers; do
        kill -9 "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass() { echo "PASS serve_$1"; }
fail() { echo "FAIL serve_$1: $2"; failed=1; }
# check NAME COMMAND...: PASS when the command succeeds.
check() {
    name=$1
    shift
    if "$@" >/dev/null; then pass "$name"; else fail "$name" "$*"; fi
}
# eq NAME GOT EXPECTED
eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', expected '$3'"; fi
}

for tool in curl jq; do
    if ! command -v $tool >/dev/null; then
        echo "FAIL serve_setup: $tool is not installed (scripts/setup-deps.sh installs it)"
        exit 1
    fi
done
if [ ! -x "$ZQ" ] || [ ! -f "$MODEL" ]; then
    echo "FAIL serve_setup: $ZQ or $MODEL is missing; run make first"
    exit 1
fi

# start_server NAME ARGS...: starts zq serve on a free port and waits until /health
# reports ok. Sets last_url and last_pid; the log is $tmp/NAME.log.
start_server() {
    name=$1
    shift
    "$ZQ" serve -m "$MODEL" --port 0 --threads 1 "$@" 2>"$tmp/$name.log" &
    last_pid=$!
    servers="$servers $last_pid"
    port=""
    i=0
    while [ $i -lt 400 ] && [ -z "$port" ] && kill -0 "$last_pid" 2>/dev/null; do
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$|\1|p' \
            "$tmp/$name.log" 2>/dev/null)
        [ -n "$port" ] || sleep 0.05
        i=$((i + 1))
    done
    last_url="http://127.0.0.1:$port"
    if [ -z "$port" ] || ! wait_for "$last_url/health" '.status == "ok"'; then
        echo "FAIL serve_start_$name: the server did not start; its log:"
        cat "$tmp/$name.log"
        exit 1
    fi
}

# wait_for URL JQ-CONDITION: polls a JSON endpoint (up to 20 s) until the condition holds.
wait_for() {
    j=0
    while [ $j -lt 400 ]; do
        if curl -s "$1" 2>/dev/null | jq -e "$2" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.05
        j=$((j + 1))
    done
    return 1
}

# metric URL NAME: prints the value of one metric line (NAME includes any labels).
metric() {
    curl -s ${auth_header:+-H "$auth_header"} "$1/metrics" |
        awk -v name="$2" '$1 == name { print $2 }'
}

# wait_metric URL NAME VALUE: polls /metrics (up to 20 s) until NAME equals VALUE.
wait_metric() {
    j=0
    while [ $j -lt 400 ]; do
        [ "$(metric "$1" "$2")" = "$3" ] && return 0
        sleep 0.05
        j=$((j + 1))
    done
    return 1
}

# req METHOD URL [BODY]: sends a request; the body lands in $tmp/body and the status in
# $status.
req() {
    if [ $# -gt 2 ]; then
        status=$(curl -s -o "$tmp/body" -w '%{http_code}' -X "$1" \
            -H 'Content-Type: application/json' --data-binary "$3" "$2")
    else
        status=$(curl -s -o "$tmp/body" -w '%{http_code}' -X "$1" "$2")
    fi
}

body() { jq -r "$1" "$tmp/body"; }

# sse_content FILE: prints the joined content deltas of an OpenAI event stream.
sse_content() {
    sed -n 's/^data: \({.*\)$/\1/p' "$1" | jq -j '.choices[0].delta.content // empty'
}

# raw_http PORT REQUEST: sends REQUEST, with \r and \n written as escapes, over a plain
# socket to 127.0.0.1:PORT and prints the response until the server closes the connection.
raw_http() {
    perl -MIO::Socket::INET -e '
        alarm 20;
        my $request = $ARGV[1];
        $request =~ s/\\r/\r/g;
        $request =~ s/\\n/\n/g;
        my $socket = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ARGV[0]")
            or die "connect: $!\n";
        print $socket $request;
        print while <$socket>;' "$1" "$2"
}

# startup_rejected NAME EXIT_CODE MESSAGE ARGS...: `zq serve ARGS` must exit at once with
# EXIT_CODE and print one line on stderr that contains MESSAGE. $startup_env, if set, is
# passed to env (VAR=VALUE). A server that starts anyway is stopped after 10 s.
startup_rejected() {
    name=$1
    expected_rc=$2
    message=$3
    shift 3
    timeout 10 env ${startup_env:-} "$ZQ" serve --port 0 --threads 1 "$@" \
        >/dev/null 2>"$tmp/startup.err"
    rc=$?
    if [ "$rc" = "$expected_rc" ] && [ "$(wc -l <"$tmp/startup.err")" -eq 1 ] &&
        grep -qF -- "$message" "$tmp/startup.err"; then
        pass "$name"
    else
        fail "$name" "exit $rc, stderr: $(head -c 300 "$tmp/startup.err")"
    fi
}

# ---- the command line: rejected options and values, help text --------------------------------
startup_rejected startup_unknown_option 2 \
    "zq serve: error: unknown or ambiguous option '--bogus'; run 'zq serve --help'" \
    -m "$MODEL" --bogus
startup_rejected startup_missing_value 2 "zq serve: error: option '--port' needs a value" \
    -m "$MODEL" --port
startup_rejected startup_missing_model 1 "zq serve: error: cannot read the model file" \
    -m "$tmp/missing.zq"
startup_rejected startup_empty_api_key 2 "zq serve: error: --api-key is empty" \
    -m "$MODEL" --api-key ""
startup_env="ZQ_API_KEY="
startup_rejected startup_empty_env_key 2 "zq serve: error: ZQ_API_KEY is empty" -m "$MODEL"
startup_env=""
startup_rejected startup_api_key_space 2 "--api-key contains a space" -m "$MODEL" \
    --api-key "a b"
startup_rejected startup_ctx_too_small 2 "zq serve: error: --ctx-size 2 is too small" \
    -m "$MODEL" --ctx-size 2

"$ZQ" serve --help >"$tmp/help.txt"
seed_help=$(grep -A 1 -- '--seed N' "$tmp/help.txt")
case "$seed_help" in
*"default 0"*) fail help_seed_random "the --seed help gives a default of 0: $seed_help" ;;
*"random"*) pass help_seed_random ;;
*) fail help_seed_random "the --seed help does not say that the default is random: $seed_help" ;;
esac
eq help_request_defaults_only "$(sed -n '/^Defaults for requests/,$p' "$tmp/help.txt" |
    grep -cE -- '--threads|--verbose|--help')" 0
check help_lists_threads grep -q -- '--threads N' "$tmp/help.txt"

# ---- server A: no cache, for the APIs, sessions, rejections and batching ----------------
start_server a --cache-size 0 --parallel 16 --max-body 65536 --max-prompt-chars 400 \
    --step-delay-ms 5
A=$last_url

req GET "$A/health"
eq health_ok "$status $(body .status)" "200 ok"
req GET "$A/v1/models"
eq models_list "$status $(body '.data[0].id') $(body '.data[0].object')" "200 zh-chat-tiny model"

status=$(curl -s -o "$tmp/body" -w '%{http_code}' -X POST -G --data-urlencode "prompt=你好" \
    --data-urlencode "max_new_tokens=8" "$A/chat")
eq chat_query_status "$status" 200
check chat_query_reply jq -e '(.reply | type) == "string" and (.tokens | type) == "number"' \
    "$tmp/body"
check chat_query_new_session jq -e '.session_id | test("^[0-9a-f]{32}$")' "$tmp/body"

# ---- sessions: history kept, window of 3, reset ----------------------------------------
req POST "$A/chat" '{"prompt":"你好","session_id":"s1","temperature":0,"max_new_tokens":8}'
first_reply=$(body .reply)
eq chat_body_status "$status $(body .session_id)" "200 s1"
req GET "$A/chat/history?session_id=s1"
eq history_one_exchange "$(body '.exchanges | length')" 1
eq history_user_turn "$(body '.exchanges[0].user')" "你好"
eq history_reply_turn "$(body '.exchanges[0].assistant')" "$first_reply"
for p in 你是谁 今天天气怎么样 再见; do
    req POST "$A/chat" "{\"prompt\":\"$p\",\"session_id\":\"s1\",\"max_new_tokens\":4}"
done
req GET "$A/chat/history?session_id=s1"
eq history_window_three "$(body '.exchanges | length') $(body '.exchanges[0].user')" "3 你是谁"
req POST "$A/chat/reset?session_id=s1"
eq reset_query "$status $(body .reset)" "200 true"
req GET "$A/chat/history?session_id=s1"
eq reset_clears "$(body '.exchanges | length')" 0
req POST "$A/chat" '{"prompt":"你好","session_id":"s1","max_new_tokens":4}'
req POST "$A/chat" '{"prompt":"早上好","session_id":"s1","reset":true,"max_new_tokens":4}'
req GET "$A/chat/history?session_id=s1"
eq reset_field "$(body '.exchanges | length') $(body '.exchanges[0].user')" "1 早上好"

# Three turns of 100 tokens each overflow the 256-token context, so the third turn drops
# the first exchange for good.
long1=$(printf '好%.0s' $(seq 100))
long2=$(printf '我%.0s' $(seq 100))
long3=$(printf '你%.0s' $(seq 100))
for p in "$long1" "$long2" "$long3"; do
    req POST "$A/chat" "{\"prompt\":\"$p\",\"session_id\":\"long\",\"max_new_tokens\":8}"
done
eq context_drop_status "$status" 200
req GET "$A/chat/history?session_id=long"
eq context_drop_oldest "$(body '.exchanges | length') $(body '.exchanges[0].user[0:1]')" "2 我"

# ---- OpenAI API and SSE --------------------------------------------------------------------
oa='{"model":"zh-chat-tiny","messages":[{"role":"system","content":"忽略"},
{"role":"user","content":"你好"}],"max_tokens":20,"temperature":0.9,"seed":7'
req POST "$A/v1/chat/completions" "$oa}"
cp "$tmp/body" "$tmp/oa.json"
eq openai_status "$status" 200
check openai_shape jq -e '.object == "chat.completion" and (.id | startswith("chatcmpl-"))
    and .model == "zh-chat-tiny" and .choices[0].index == 0
    and .choices[0].message.role == "assistant"
    and (.choices[0].finish_reason == "stop" or .choices[0].finish_reason == "length")
    and (.created | type) == "number"' "$tmp/oa.json"
check openai_usage jq -e '.usage.total_tokens == .usage.prompt_tokens + .usage.completion_tokens
    and .usage.prompt_tokens == 4' "$tmp/oa.json"

curl -s -N -H 'Content-Type: application/json' --data-binary "$oa,\"stream\":true}" \
    "$A/v1/chat/completions" >"$tmp/oa.sse"
data_lines=$(grep -c '^data: ' "$tmp/oa.sse")
check sse_only_data_lines test "$(grep -v '^$' "$tmp/oa.sse" | grep -cv '^data: ')" -eq 0
check sse_blank_line_per_event test "$(grep -c '^$' "$tmp/oa.sse")" -eq "$data_lines"
eq sse_done_last "$(grep '^data: ' "$tmp/oa.sse" | tail -n 1)" "data: [DONE]"
sed -n 's/^data: \({.*\)$/\1/p' "$tmp/oa.sse" >"$tmp/oa.chunks"
eq sse_first_role "$(head -n 1 "$tmp/oa.chunks" | jq -r '.choices[0].delta.role')" assistant
check sse_chunk_object jq -se 'all(.object == "chat.completion.chunk")' "$tmp/oa.chunks"
check sse_finish_null_until_last jq -se \
    '(.[:-1] | all(.choices[0].finish_reason == null))
     and (.[-1].choices[0].finish_reason | IN("stop", "length"))' "$tmp/oa.chunks"
eq sse_joined_equals_plain "$(sse_content "$tmp/oa.sse")" \
    "$(jq -j '.choices[0].message.content' "$tmp/oa.json")"
eq sse_finish_equals_plain "$(tail -n 1 "$tmp/oa.chunks" | jq -r '.choices[0].finish_reason')" \
    "$(jq -r '.choices[0].finish_reason' "$tmp/oa.json")"

curl -s -N -H 'Content-Type: application/json' \
    --data-binary "$oa,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" \
    "$A/v1/chat/completions" >"$tmp/usage.sse"
sed -n 's/^data: \({.*\)$/\1/p' "$tmp/usage.sse" | tail -n 1 >"$tmp/usage.last"
check sse_usage_chunk jq -e '(.choices | length) == 0 and .usage.completion_tokens >= 1' \
    "$tmp/usage.last"

chat_body='{"prompt":"你在做什么","temperature":0.8,"seed":11,"max_new_tokens":16'
req POST "$A/chat" "$chat_body}"
plain_reply=$(body .reply)
curl -s -N -H 'Content-Type: application/json' --data-binary "$chat_body,\"stream\":true}" \
    "$A/chat" >"$tmp/chat.sse"
eq chat_sse_joined "$(sed -n 's/^data: \({.*\)$/\1/p' "$tmp/chat.sse" | jq -j '.delta // empty')" \
    "$plain_reply"
eq chat_sse_final "$(sed -n 's/^data: \({.*\)$/\1/p' "$tmp/chat.sse" | tail -n 1 | jq -r .reply)" \
    "$plain_reply"
eq chat_sse_done "$(grep '^data: ' "$tmp/chat.sse" | tail -n 1)" "data: [DONE]"

# ---- rejected input: status, error object, and the server keeps serving ---------------------
# reject NAME STATUS METHOD PATH [BODY]
reject() {
    name=$1
    expected=$2
    shift 2
    req "$@"
    if [ "$status" = "$expected" ] && jq -e '(.error.message | length) > 0
        and (.error.type | type) == "string"' "$tmp/body" >/dev/null 2>&1; then
        pass "reject_$name"
    else
        fail "reject_$name" "status $status, body $(head -c 200 "$tmp/body")"
    fi
}
reject malformed_json 400 POST "$A/chat" '{"prompt":'
reject trailing_data 400 POST "$A/chat" '{"prompt":"a"} {}'
reject not_object 400 POST "$A/v1/chat/completions" '[1]'
reject missing_prompt 400 POST "$A/chat" '{"session_id":"x"}'
reject prompt_type 400 POST "$A/chat" '{"prompt":7}'
reject negative_temperature 400 POST "$A/chat" '{"prompt":"a","temperature":-1}'
reject top_p_zero 400 POST "$A/chat" '{"prompt":"a","top_p":0}'
reject top_p_above_one 400 POST "$A/chat" '{"prompt":"a","top_p":1.5}'
reject max_new_tokens_cap 400 POST "$A/chat" '{"prompt":"a","max_new_tokens":100000}'
reject max_new_tokens_type 400 POST "$A/chat" '{"prompt":"a","max_new_tokens":"8"}'
reject session_id_chars 400 POST "$A/chat" '{"prompt":"a","session_id":"../x"}'
reject prompt_too_long 400 POST "$A/chat" "{\"prompt\":\"$(printf 'a%.0s' $(seq 401))\"}"
reject query_number 400 POST "$A/chat?prompt=a&top_k=many"
reject missing_messages 400 POST "$A/v1/chat/completions" '{"model":"zh-chat-tiny"}'
reject last_not_user 400 POST "$A/v1/chat/completions" \
    '{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}'
reject bad_role 400 POST "$A/v1/chat/completions" '{"messages":[{"role":"bot","content":"a"}]}'
reject n_above_one 400 POST "$A/v1/chat/completions" \
    '{"n":2,"messages":[{"role":"user","content":"a"}]}'
reject nul_prompt 400 POST "$A/chat" '{"prompt":"a\u0000b","session_id":"nul"}'
check nul_prompt_names_field grep -q 'prompt contains a NUL character' "$tmp/body"
req GET "$A/chat/history?session_id=nul"
eq nul_prompt_not_stored "$(body '.exchanges | length')" 0
reject nul_query 400 POST "$A/chat?prompt=a%00b"
reject nul_openai_content 400 POST "$A/v1/chat/completions" \
    '{"messages":[{"role":"user","content":"a\u0000b"}]}'
check nul_openai_names_field grep -q 'messages\[0\]\.content contains a NUL' "$tmp/body"
reject nul_openai_part 400 POST "$A/v1/chat/completions" \
    '{"messages":[{"role":"user","content":[{"type":"text","text":"a\u0000"}]}]}'
reject nul_reset_session 400 POST "$A/chat/reset" '{"session_id":"s1\u0000x"}'
printf '{"prompt":"\377\376"}' >"$tmp/bad-utf8.json"
reject invalid_utf8 400 POST "$A/chat" "@$tmp/bad-utf8.json"
reject unknown_path 404 GET "$A/v2/nothing"
reject get_chat 405 GET "$A/chat"
reject post_health 405 POST "$A/health" '{}'
reject delete_models 405 DELETE "$A/v1/models"
head -c 70000 /dev/zero | tr '\0' 'a' >"$tmp/big.txt"
reject body_too_large 413 POST "$A/chat" "@$tmp/big.txt"
allow=$(curl -s -D - -o /dev/null "$A/chat" | tr -d '\r' | sed -n 's/^Allow: //Ip')
eq method_allow_header "$allow" POST

# 302 prompt tokens ([CLS], 300 characters, [SEP]) do not fit the 256-token context.
long300=$(printf '好%.0s' $(seq 300))
reject context_overflow 400 POST "$A/v1/chat/completions" \
    "{\"messages\":[{\"role\":\"user\",\"content\":\"$long300\"}],\"max_tokens\":10}"
check context_overflow_counts grep -q '256 tokens, but the messages are 302 tokens' "$tmp/body"
reject chat_prompt_over_context 400 POST "$A/chat" "{\"prompt\":\"$long300\"}"
req GET "$A/health"
eq alive_after_rejections "$status" 200
req POST "$A/chat" '{"prompt":"你好","max_new_tokens":4}'
eq chat_after_rejections "$status" 200

# ---- 16 concurrent clients equal the same requests run alone --------------------------------
prompts="你好 你是谁 早上好 我们走吧 这是什么 你去哪儿 我很抱歉 谢谢你 你喜欢这里吗 我们需要谈谈
晚安 你在干什么 快点 别担心 我不知道 好久不见"
i=0
for p in $prompts; do
    printf '{"messages":[{"role":"user","content":"%s"}],"max_tokens":24,' "$p" >"$tmp/conc$i.json"
    printf '"temperature":0.9,"top_k":40,"seed":%d}' $((100 + i)) >>"$tmp/conc$i.json"
    curl -s -H 'Content-Type: application/json' --data-binary "@$tmp/conc$i.json" \
        "$A/v1/chat/completions" | jq -j '.choices[0].message.content' >"$tmp/alone$i.txt"
    i=$((i + 1))
done
steps_before=$(metric "$A" zq_batch_size_count)
pids=""
i=0
while [ $i -lt 16 ]; do
    curl -s -H 'Content-Type: application/json' --data-binary "@$tmp/conc$i.json" \
        "$A/v1/chat/completions" -o "$tmp/together$i.json" &
    pids="$pids $!"
    i=$((i + 1))
done
wait $pids
same=0
i=0
while [ $i -lt 16 ]; do
    together=$(jq -j '.choices[0].message.content' "$tmp/together$i.json")
    if [ "$together" = "$(cat "$tmp/alone$i.txt")" ]; then
        same=$((same + 1))
    else
        echo "request $i: alone '$(cat "$tmp/alone$i.txt")', together '$together'" >&2
    fi
    i=$((i + 1))
done
eq concurrent_equal_alone "$same" 16
# Batching happened: fewer decoding steps than tokens generated concurrently.
steps=$(($(metric "$A" zq_batch_size_count) - steps_before))
batched=$(metric "$A" 'zq_batch_size_bucket{le="1"}')
check concurrent_batched test "$(metric "$A" zq_batch_size_count)" -gt "$batched"
# One request alone takes 23 decoding steps (its first token comes from the prefill).
check concurrent_fewer_steps test "$steps" -lt $((16 * 23 / 2))

# ---- server B: API key, metrics counters, access log ----------------------------------------
start_server b --api-key sekret --cache-size 0
B=$last_url
# auth_rejected NAME HEADER: a /chat request with the given Authorization header ("" = none)
# must be rejected.
auth_rejected() {
    status=$(curl -s -o "$tmp/body" -w '%{http_code}' ${2:+-H "$2"} \
        -H 'Content-Type: application/json' --data-binary '{"prompt":"秘密问题"}' "$B/chat")
    eq "auth_rejected_$1" "$status $(body .error.type)" "401 authentication_error"
}
auth_rejected missing ""
auth_rejected wrong_key "Authorization: Bearer wrong"
auth_rejected basic_scheme "Authorization: Basic sekret"
status=$(curl -s -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer sekret" \
    -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"秘密问题","max_new_tokens":4}' "$B/chat")
eq auth_accepted "$status" 200
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer sekret" \
    -H 'Content-Type: application/json' --data-binary '{"prompt":""}' "$B/chat")
eq auth_then_validated "$status" 400
eq auth_health_public "$(curl -s -o /dev/null -w '%{http_code}' "$B/health")" 200
eq auth_metrics_protected "$(curl -s -o /dev/null -w '%{http_code}' "$B/metrics")" 401
auth_header="Authorization: Bearer sekret"
eq metrics_chat_401 "$(metric "$B" 'zq_requests_total{endpoint="/chat",status="401"}')" 3
eq metrics_chat_200 "$(metric "$B" 'zq_requests_total{endpoint="/chat",status="200"}')" 1
eq metrics_chat_400 "$(metric "$B" 'zq_requests_total{endpoint="/chat",status="400"}')" 1
eq metrics_ttft_count "$(metric "$B" zq_time_to_first_token_seconds_count)" 1
eq metrics_latency_count \
    "$(metric "$B" 'zq_request_duration_seconds_count{endpoint="/chat"}')" 5
check metrics_tokens test "$(metric "$B" zq_tokens_generated_total)" -ge 1
eq metrics_idle_gauges "$(metric "$B" zq_requests_active) $(metric "$B" zq_requests_queued)" "0 0"
curl -s -H "$auth_header" "$B/metrics" >"$tmp/metrics.txt"
check metrics_type_lines grep -q '^# TYPE zq_request_duration_seconds histogram$' \
    "$tmp/metrics.txt"
auth_header=""
check access_log_line grep -q '"POST /chat" 200 [0-9.]* ms tokens=' "$tmp/b.log"
check access_log_401 grep -q '"POST /chat" 401 ' "$tmp/b.log"
check access_log_no_prompt test "$(grep -c '秘密问题' "$tmp/b.log")" -eq 0

# ---- server C: cache, filter, prompt logging ------------------------------------------------
# The output filter word is a piece of a greedy reply of server A, so the model is known to
# produce it.
req POST "$A/chat" '{"prompt":"早上好","temperature":0,"max_new_tokens":16}'
greedy_length=$(body '.reply | length')
word=$(body '[.reply | scan("\\p{Han}")] | .[0:2] | join("")')
check filter_word_found test -n "$word"
case "早上好" in *"$word"*) fail filter_word_not_in_prompt "the word $word is in the prompt" ;; esac
printf '# sensitive words\n坏蛋\n%s\n' "$word" >"$tmp/words.txt"
start_server c --cache-size 16 --filter-words "$tmp/words.txt" --log-prompts \
    --filter-reply "不能回答" --max-sessions 2
C=$last_url

greedy='{"messages":[{"role":"user","content":"你是谁"}],"max_tokens":12,"temperature":0}'
req POST "$C/v1/chat/completions" "$greedy"
first=$(body '.choices[0].message.content')
req POST "$C/v1/chat/completions" "$greedy"
eq cache_same_reply "$(body '.choices[0].message.content')" "$first"
eq cache_hit_metric "$(metric "$C" zq_cache_hits_total) $(metric "$C" zq_cache_misses_total)" "1 1"
req POST "$C/v1/chat/completions" \
    '{"messages":[{"role":"user","content":"你是谁"}],"max_tokens":12,"temperature":0.7}'
eq cache_skips_unseeded "$(metric "$C" zq_cache_hits_total) $(metric "$C" zq_cache_misses_total)" \
    "1 1"
req POST "$C/chat" '{"prompt":"谢谢你","session_id":"c1","temperature":0,"max_new_tokens":8}'
cached_reply=$(body .reply)
req POST "$C/chat" '{"prompt":"谢谢你","session_id":"c2","temperature":0,"max_new_tokens":8}'
eq cache_hit_chat "$(metric "$C" zq_cache_hits_total) $(body .reply)" "2 $cached_reply"
req GET "$C/chat/history?session_id=c2"
eq cache_hit_updates_session "$(body '.exchanges | length') $(body '.exchanges[0].assistant')" \
    "1 $cached_reply"
check access_log_cache_hit grep -q 'cache=hit' "$tmp/c.log"
check access_log_prompt grep -q 'prompt="谢谢你"' "$tmp/c.log"

req POST "$C/chat" '{"prompt":"你是坏 蛋吗","session_id":"f1"}'
eq filter_input_refusal "$(body .reply) $(body .finish_reason) $(body .tokens)" \
    "不能回答 content_filter 0"
req GET "$C/chat/history?session_id=f1"
eq filter_input_not_stored "$(body '.exchanges | length')" 0
req POST "$C/v1/chat/completions" '{"messages":[{"role":"user","content":"坏蛋"}]}'
eq filter_input_openai "$(body '.choices[0].message.content') $(body '.choices[0].finish_reason')" \
    "不能回答 content_filter"
eq filter_input_metric "$(metric "$C" 'zq_filter_hits_total{direction="input"}')" 2

req POST "$C/chat" '{"prompt":"早上好","temperature":0,"max_new_tokens":16}'
masked=$(body .reply)
check filter_output_word_gone test "$(body ".reply | contains(\"$word\")")" = false
check filter_output_stars test "$(body '.reply | contains("*")')" = true
eq filter_output_length "$(body '.reply | length')" "$greedy_length"
check filter_output_metric test "$(metric "$C" 'zq_filter_hits_total{direction="output"}')" -ge 1
curl -s -N -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"早上好","temperature":0,"max_new_tokens":16,"stream":true}' \
    "$C/chat" >"$tmp/masked.sse"
eq filter_output_stream \
    "$(sed -n 's/^data: \({.*\)$/\1/p' "$tmp/masked.sse" | jq -j '.delta // empty')" "$masked"

# --max-sessions 2: the two sessions made by the last two requests evicted c1 and c2.
eq sessions_capped "$(metric "$C" zq_sessions)" 2
req GET "$C/chat/history?session_id=c1"
eq sessions_lru_evicted "$(body '.exchanges | length')" 0

# ---- server D: a full queue, disconnects, graceful shutdown ---------------------------------
start_server d --parallel 1 --queue 1 --cache-size 0 --step-delay-ms 40
D=$last_url
long_stream='{"messages":[{"role":"user","content":"你好"}],"max_tokens":200,
"ignore_eos":true,"stream":true}'
curl -s -N -H 'Content-Type: application/json' --data-binary "$long_stream" \
    "$D/v1/chat/completions" >"$tmp/cut.sse" &
stream_pid=$!
check queue_first_active wait_metric "$D" zq_requests_active 1
curl -s -o /dev/null -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"你好","max_new_tokens":3}' "$D/chat" &
queued_pid=$!
check queue_second_waits wait_metric "$D" zq_requests_queued 1
reject queue_full 503 POST "$D/chat" '{"prompt":"你好"}'
eq queue_full_type "$(body .error.type)" overloaded_error
eq queue_full_still_healthy "$(curl -s -o /dev/null -w '%{http_code}' "$D/health")" 200

# A queued client that leaves gets its connection closed at once (status 499 in the
# metrics) while the stream still holds the only slot.
kill "$queued_pid"
wait "$queued_pid" 2>/dev/null
check queued_leaves_early wait_metric "$D" 'zq_requests_total{endpoint="/chat",status="499"}' 1
eq queued_leaves_slot_busy "$(metric "$D" zq_requests_active)" 1

kill "$stream_pid"
wait "$stream_pid" 2>/dev/null
check disconnect_got_data grep -q '"content"' "$tmp/cut.sse"
# The stream and the queued job that lost its client are both cancelled.
check disconnect_cancels wait_metric "$D" zq_generations_cancelled_total 2
check disconnect_stopped_early test "$(metric "$D" zq_tokens_generated_total)" -lt 200
check disconnect_slot_freed wait_metric "$D" zq_requests_active 0
req POST "$D/chat" '{"prompt":"你好","max_new_tokens":3}'
eq disconnect_next_served "$status" 200

req POST "$D/chat" '{"prompt":"你好","session_id":"half","max_new_tokens":3}'
curl -s -N -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"再说一遍","session_id":"half","max_new_tokens":200,
"ignore_eos":true,"stream":true}' \
    "$D/chat" >"$tmp/half.sse" &
half_pid=$!
check half_turn_active wait_metric "$D" zq_requests_active 1
kill "$half_pid"
wait "$half_pid" 2>/dev/null
check half_turn_cancelled wait_metric "$D" zq_generations_cancelled_total 3
req GET "$D/chat/history?session_id=half"
eq half_turn_not_stored "$(body '.exchanges | length') $(body '.exchanges[0].user')" "1 你好"

# SIGTERM: the running request finishes, then the server exits 0 and stops listening.
curl -s -o "$tmp/last.json" -H 'Content-Type: application/json' \
    --data-binary '{"messages":[{"role":"user","content":"你好"}],"max_tokens":20,
"ignore_eos":true}' \
    "$D/v1/chat/completions" &
last_pid_curl=$!
check shutdown_request_active wait_metric "$D" zq_requests_active 1
d_pid=$last_pid
kill -TERM "$d_pid"
wait "$d_pid"
eq shutdown_exit_code $? 0
wait "$last_pid_curl"
eq shutdown_finished_request "$(jq -r '.usage.completion_tokens' "$tmp/last.json")" 20
curl -s -o /dev/null "$D/health"
eq shutdown_stops_listening $? 7

# Requests that outlive --shutdown-timeout are aborted: a plain one with 503, a stream with
# an error event of the same type and code. The exit is still 0.
start_server e --parallel 2 --cache-size 0 --step-delay-ms 40 --shutdown-timeout 0.2
E=$last_url
curl -s -o "$tmp/aborted.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"你好","max_new_tokens":200,"ignore_eos":true}' \
    "$E/chat" >"$tmp/aborted.status" &
aborted_curl=$!
curl -s -N -H 'Content-Type: application/json' --data-binary "$long_stream" \
    "$E/v1/chat/completions" >"$tmp/aborted.sse" &
aborted_stream=$!
check abort_requests_active wait_metric "$E" zq_requests_active 2
kill -TERM "$last_pid"
wait "$last_pid"
eq abort_exit_code $? 0
wait "$aborted_curl" "$aborted_stream"
eq abort_status "$(cat "$tmp/aborted.status") $(jq -r .error.type "$tmp/aborted.json")" \
    "503 unavailable_error"
eq abort_code_field "$(jq -r .error.code "$tmp/aborted.json")" 503
eq abort_stream_done "$(grep '^data: ' "$tmp/aborted.sse" | tail -n 1)" "data: [DONE]"
grep '^data: {"error"' "$tmp/aborted.sse" | sed 's/^data: //' >"$tmp/aborted.event"
eq abort_stream_error "$(jq -r '"\(.error.type) \(.error.code)"' "$tmp/aborted.event")" \
    "unavailable_error 503"
check abort_stream_message jq -e '(.error.message | length) > 0' "$tmp/aborted.event"

# ---- server F: free slots take requests while the queue is full ---------------------------
# Requests that arrive while slots are free wait in the queue until the scheduler's next
# step moves them into the slots. With a step delay of 500 ms, three requests arrive within
# one step, more than --queue 1; the free slots must still take them.
start_server f --parallel 4 --queue 1 --cache-size 0 --step-delay-ms 500
F=$last_url
curl -s -o /dev/null -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"你好","max_new_tokens":6,"ignore_eos":true}' "$F/chat" &
first_pid=$!
check free_slots_first_active wait_metric "$F" zq_requests_active 1
pids=""
for i in 1 2 3; do
    curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary '{"prompt":"你好","max_new_tokens":2,"ignore_eos":true}' \
        "$F/chat" >"$tmp/free$i.status" &
    pids="$pids $!"
done
wait $pids "$first_pid"
eq free_slots_take_requests \
    "$(cat "$tmp/free1.status") $(cat "$tmp/free2.status") $(cat "$tmp/free3.status")" \
    "200 200 200"
# Five long streams take the four slots and the one queue place; a sixth request is 503.
pids=""
for i in 1 2 3 4 5; do
    curl -s -N -o /dev/null -H 'Content-Type: application/json' \
        --data-binary "$long_stream" "$F/v1/chat/completions" &
    pids="$pids $!"
done
check full_slots_active wait_metric "$F" zq_requests_active 4
check full_queue_waiting wait_metric "$F" zq_requests_queued 1
reject full_slots_and_queue 503 POST "$F/chat" '{"prompt":"你好"}'
eq full_slots_type "$(body .error.type)" overloaded_error
kill $pids 2>/dev/null
wait $pids 2>/dev/null

# ---- server G: the smallest context, and errors that libmicrohttpd sends itself ------------
# --ctx-size 4 holds [CLS], one prompt token, [SEP] and one reply token.
start_server g --ctx-size 4 --cache-size 0
G=$last_url
# ignore_eos keeps a sampled [SEP] from ending the reply before its one token.
req POST "$G/chat" '{"prompt":"你","max_new_tokens":8,"ignore_eos":true}'
eq min_ctx_chat "$status $(body .tokens) $(body .finish_reason)" "200 1 length"
req POST "$G/v1/chat/completions" '{"messages":[{"role":"user","content":"你"}],"ignore_eos":true}'
eq min_ctx_openai "$status $(body .usage.completion_tokens)" "200 1"
req POST "$G/chat" '{"prompt":"你好"}'
eq min_ctx_longer_prompt "$status $(body .error.type)" "400 invalid_request_error"

# libmicrohttpd rejects a malformed chunked body (in HTML) after the access handler saw the
# headers. The access log and the metrics must show its 400, not 499.
head='POST /chat HTTP/1.1\r\nHost: x\r\n'
raw_http "$port" "${head}Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n" \
    >"$tmp/chunked.txt"
eq mhd_chunked_status "$(head -n 1 "$tmp/chunked.txt" | tr -d '\r')" "HTTP/1.1 400 Bad Request"
check mhd_chunked_metric wait_metric "$G" 'zq_requests_total{endpoint="/chat",status="400"}' 2
eq mhd_chunked_not_499 "$(metric "$G" 'zq_requests_total{endpoint="/chat",status="499"}')" ""
check mhd_chunked_access_log grep -q '"POST /chat" 400 .* aborted$' "$tmp/g.log"
raw_http "$port" "${head}Content-Length: -1\r\n\r\n" >"$tmp/negative.txt"
eq mhd_negative_length "$(head -n 1 "$tmp/negative.txt" | tr -d '\r')" "HTTP/1.1 400 Bad Request"
eq mhd_alive_after_errors "$(curl -s -o /dev/null -w '%{http_code}' "$G/health")" 200

# ---- server H: sessions in Redis, one of them stored in the wrong shape ---------------------
for tool in redis-server redis-cli perl; do
    if ! command -v $tool >/dev/null; then
        echo "FAIL serve_redis_setup: $tool is not installed (scripts/setup-deps.sh lists it)"
        exit 1
    fi
done
# Another program could take the port between this check and redis-server's bind.
redis_port=$(perl -MIO::Socket::INET \
    -e 'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0")->sockport')
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$tmp" \
    --logfile "$tmp/redis.log" --daemonize no &
servers="$servers $!"
j=0
while [ $j -lt 400 ] && [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" != PONG ]; do
    sleep 0.05
    j=$((j + 1))
done
redis-cli -p "$redis_port" SET zq:session:bad '{"exchanges":[{"user":5}]}' >/dev/null
start_server h --cache "redis://127.0.0.1:$redis_port" --cache-size 0
H=$last_url
req GET "$H/chat/history?session_id=bad"
eq redis_bad_history_empty "$status $(body '.exchanges | length')" "200 0"
req POST "$H/chat" '{"prompt":"你好","session_id":"bad","max_new_tokens":4}'
eq redis_bad_session_chat "$status $(body .session_id)" "200 bad"
check redis_bad_session_logged grep -q \
    'warn: .*session bad: .* zq:session:bad is not a session history (exchanges\[0\]' "$tmp/h.log"
req GET "$H/chat/history?session_id=bad"
eq redis_bad_session_replaced "$(body '.exchanges | length') $(body '.exchanges[0].user')" "1 你好"

exit $failed
