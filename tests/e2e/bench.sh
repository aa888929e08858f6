#!/bin/sh
# End-to-end checks of `zq bench` on the default model with tiny sizes: the JSON records carry
# every field with sane values, the prompt is shortened to fit the model's positions, greedy
# tokens do not depend on the thread count, and bench/report.py turns records into a report.
# Timings are only checked to be positive numbers. Prints one PASS/FAIL line per check.
set -u
ZQ=${ZQ_BIN:-build/zq}
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0

pass() { echo "PASS bench_$1"; }
fail() { echo "FAIL bench_$1: $2"; failed=1; }
check() {
    name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name" "$*"; fi
}
# has_number FILE FIELD: the record has "FIELD":<positive number>.
has_number() { grep -Eq "\"$2\":(0\.0*[1-9]|[1-9])[0-9.e+-]*[,}]" "$1"; }
has_string() { grep -q "\"$2\":\"$3\"" "$1"; }

# --- help and usage -------------------------------------------------------------------------
check help sh -c "\"$ZQ\" bench --help >/dev/null"
for part in bandwidth kernels model; do
    check "help_$part" sh -c "\"$ZQ\" bench $part --help >/dev/null"
done
"$ZQ" bench frobnicate 2>"$tmp/err"
check unknown_part_exit2 test $? -eq 2
check unknown_part_message grep -q "unknown part 'frobnicate'" "$tmp/err"
"$ZQ" bench bandwidth --mb 0 2>"$tmp/err"
check bad_mb_exit2 test $? -eq 2
"$ZQ" bench model -m "$tmp/none.zq" 2>"$tmp/err"
check missing_model_exit1 test $? -eq 1
check missing_model_message grep -q "none.zq' not found" "$tmp/err"

# --- bandwidth --------------------------------------------------------------------------------
"$ZQ" bench bandwidth --mb 16 --threads 1 --json >"$tmp/bw.json"
check bandwidth_exit0 test $? -eq 0
check bandwidth_one_line test "$(wc -l <"$tmp/bw.json")" -eq 1
check bandwidth_gb_s has_number "$tmp/bw.json" gb_s
check bandwidth_threads grep -q '"threads":1,' "$tmp/bw.json"
check bandwidth_mb grep -q '"mb":16,' "$tmp/bw.json"
"$ZQ" bench bandwidth --mb 16 --passes 3 --json >"$tmp/bw3.json"
check bandwidth_passes grep -Eq '"passes_gb_s":\[[0-9.]+,[0-9.]+,[0-9.]+\]' "$tmp/bw3.json"
"$ZQ" bench bandwidth --passes 0 2>"$tmp/err"
check bad_passes_exit2 test $? -eq 2

# --- model ------------------------------------------------------------------------------------
bench_model() {
    "$ZQ" bench model --json --prompt-len 16 --decode 8 --repeats 2 --bandwidth-mb 16 "$@"
}
bench_model --threads 1 >"$tmp/m1.json" 2>"$tmp/m1.err"
check model_exit0 test $? -eq 0
check model_one_line test "$(wc -l <"$tmp/m1.json")" -eq 1
check model_engine has_string "$tmp/m1.json" engine zq
check model_type has_string "$tmp/m1.json" type int8
check model_name has_string "$tmp/m1.json" model zh-chat-tiny
check model_threads grep -q '"threads":1,' "$tmp/m1.json"
for field in prefill_tok_s decode_tok_s ttft_ms peak_rss_mb file_mb weights_mb_per_token; do
    check "model_$field" has_number "$tmp/m1.json" "$field"
done
check model_load_s grep -Eq '"load_s":[0-9.e+-]+,' "$tmp/m1.json"
check model_prompt_len grep -q '"prompt_len":16,' "$tmp/m1.json"
check model_not_clipped grep -q '"prompt_clipped":false' "$tmp/m1.json"
check model_two_runs test "$(grep -o '"decode_tok_s"' "$tmp/m1.json" | wc -l)" -eq 3

bench_model --threads 2 --name tiny >"$tmp/m2.json"
"$ZQ" bench model --json --prompt-len 1 --decode 1 --repeats 1 >"$tmp/one.json"
check model_one_token_prompt grep -q '"context":2,' "$tmp/one.json"
tokens() { grep -o '"first_tokens":\[[0-9,]*\]' "$1"; }
check model_tokens_present test -n "$(tokens "$tmp/m1.json")"
check model_tokens_same_across_threads test "$(tokens "$tmp/m1.json")" = "$(tokens "$tmp/m2.json")"
check model_name_option has_string "$tmp/m2.json" model tiny
check model_kv_type_auto has_string "$tmp/m1.json" kv_type int8
check model_bandwidth_read grep -q '"bandwidth_gb_s":[1-9]' "$tmp/m1.json"
check model_bandwidth_per_run test "$(grep -o '"bandwidth_gb_s"' "$tmp/m1.json" | wc -l)" -eq 3
check model_bandwidth_best_run jq -e '.bandwidth_gb_s == ([.runs[].bandwidth_gb_s] | max)' \
    "$tmp/m1.json"
"$ZQ" bench model --json --prompt-len 4 --decode 2 --repeats 1 --bandwidth-mb 0 >"$tmp/nobw.json"
check model_bandwidth_skipped test -z "$(grep -o bandwidth_gb_s "$tmp/nobw.json")"
"$ZQ" bench model --bandwidth-mb -1 2>"$tmp/err"
check model_bandwidth_bad_exit2 test $? -eq 2
bench_model --threads 1 --kv-type f32 >"$tmp/kv32.json"
check model_kv_type_f32 has_string "$tmp/kv32.json" kv_type f32
bench_model --threads 1 --kv-type f16 >"$tmp/kv16.json"
check model_kv_type_f16 has_string "$tmp/kv16.json" kv_type f16
kv_mb() { grep -o '"kv_mb_per_token":[0-9.]*' "$1" | cut -d: -f2; }
check model_kv_f16_half_of_f32 awk -v a="$(kv_mb "$tmp/kv16.json")" \
    -v b="$(kv_mb "$tmp/kv32.json")" \
    'BEGIN { d = a * 2 - b; exit !(a > 0 && d < 0.002 && d > -0.002) }'
# An int8 cache (auto for int8 weights) takes a quarter of the f32 bytes plus one 4-byte scale
# per head of a row.
check model_kv_int8_bytes awk -v a="$(kv_mb "$tmp/m1.json")" -v b="$(kv_mb "$tmp/kv32.json")" \
    'BEGIN { d = a - b / 4 * (1 + 4.0 / 64); exit !(a > 0 && d < 0.002 && d > -0.002) }'

# zh-chat-tiny has 256 positions: 600 + 8 does not fit, so the prompt becomes 248 tokens.
"$ZQ" bench model --json --prompt-len 600 --decode 8 --repeats 1 >"$tmp/clip.json" \
    2>"$tmp/clip.err"
check clip_exit0 test $? -eq 0
check clip_prompt_len grep -q '"prompt_len":248,' "$tmp/clip.json"
check clip_flag grep -q '"prompt_clipped":true' "$tmp/clip.json"
check clip_note grep -q "256 positions" "$tmp/clip.err"
"$ZQ" bench model --decode 256 2>"$tmp/err"
check decode_too_long_exit2 test $? -eq 2

# --- report -----------------------------------------------------------------------------------
if "$PYTHON" -c "import matplotlib" 2>/dev/null; then
    mkdir -p "$tmp/parts"
    cp "$tmp/bw.json" "$tmp/parts/bandwidth.jsonl"
    cat "$tmp/m1.json" "$tmp/clip.json" >"$tmp/parts/records.jsonl"
    here=$(dirname "$0")
    "$PYTHON" "$here/../../bench/report.py" --collect "$tmp/parts" --target-model zh-chat-tiny \
        --synth-dir "$here/../../models/zh-chat-tiny" --zq-dir "$tmp" --out "$tmp/r.json" \
        --md "$tmp/r.md" --chart "$tmp/r.png" 2>"$tmp/report.err"
    check report_exit0 test $? -eq 0
    check report_table grep -q "^| zq | int8 | 1 |" "$tmp/r.md"
    check report_limit grep -q "^| zh-chat-tiny | " "$tmp/r.md"
    # The targets are about 2-thread runs; a build without OpenMP records only 1 thread.
    if grep -q '"threads":2,' "$tmp/m2.json"; then
        check report_no_data grep -q "| no data |" "$tmp/r.md"
    fi
    check report_chart test -s "$tmp/r.png"
else
    echo "bench.sh: $PYTHON without matplotlib; report checks not run" >&2
fi

exit $failed
