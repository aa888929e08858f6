#!/bin/sh
# End-to-end checks of `zq eval` and of the quantizer's accuracy options (--calibrate,
# --keep-f16) on a slice of data/zh-dialogue-valid.tsv. Prints one PASS/FAIL line per check;
# exits 1 if any failed.
set -u
ZQ=${ZQ_BIN:-build/zq}
# One thread: the results do not depend on the thread count, and OpenMP threads that wait for a
# busy core make the script many times slower on a shared machine.
T="--threads=1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0

pass() { echo "PASS eval_$1"; }
fail() { echo "FAIL eval_$1: $2"; failed=1; }
# check NAME CONDITION-COMMAND... : runs the condition, PASS if it succeeds.
check() {
    name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name" "$*"; fi
}
# expect_error NAME EXIT-CODE TEXT -- ARGS... : runs zq ARGS, expects the exit code and TEXT on
# stderr.
expect_error() {
    err_name=$1 err_code=$2 err_text=$3
    shift 4
    "$ZQ" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    check "${err_name}_exit$err_code" test $rc -eq "$err_code"
    check "${err_name}_message" grep -q "$err_text" "$tmp/err"
}

head -n 10 data/zh-dialogue-valid.tsv >"$tmp/slice.tsv"
for t in f32 int8; do
    "$ZQ" quantize "$T" models/zh-chat-tiny -o "$tmp/$t.zq" --type "$t" -q --zstd-level 1 \
        2>/dev/null
done
check quantize_models test -s "$tmp/f32.zq" -a -s "$tmp/int8.zq"
check help "$ZQ" eval --help >/dev/null

# --- table ------------------------------------------------------------------------------------
"$ZQ" eval "$T" -m "$tmp/f32.zq" -m "$tmp/int8.zq" --text "$tmp/slice.tsv" -q >"$tmp/table"
check table_exit0 test $? -eq 0
check table_header grep -q "^model .*ppl .*kld_mean .*kld_p99 .*top1_%" "$tmp/table"
check table_chat_framing grep -q "(chat framing)" "$tmp/table"
check table_reference_row grep -Eq "f32\.zq +f32 +f32 +[0-9.]+ +1\.0000 +0\.000e\+00" "$tmp/table"
check table_int8_row grep -Eq "int8\.zq +int8 +int8 +[0-9.]+ +1\.0" "$tmp/table"

# --- JSON -------------------------------------------------------------------------------------
"$ZQ" eval "$T" -m "$tmp/f32.zq" -m "$tmp/int8.zq" --text "$tmp/slice.tsv" --json -q \
    >"$tmp/json"
check json_exit0 test $? -eq 0
for key in '"text"' '"tokens"' '"models"' '"ppl"' '"ppl_ratio"' '"kld_mean"' '"kld_median"' \
    '"kld_p99"' '"kld_max"' '"same_top1"' '"dp_mean"' '"dp_rms"' '"type":	"int8"'; do
    check "json_has_$(echo "$key" | tr -dc 'a-z0-9_')" grep -q "$key" "$tmp/json"
done
if command -v python3 >/dev/null; then
    # The reference's KL fields are 0; int8 stays close to f32 on this model.
    check json_values python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
ref, q = d["models"]
assert d["tokens"] > 300, d
assert d["scored"] < d["tokens"], d
assert ref["kld_mean"] == 0, ref
assert ref["kld_max"] == 0, ref
assert ref["same_top1"] == 1, ref
assert ref["ppl_ratio"] == 1, ref
assert 10 < ref["ppl"] < 100, ref
assert 0 < q["kld_mean"] < 0.005, q
assert q["same_top1"] > 0.95, q
assert abs(q["ppl_ratio"] - 1) < 0.01, q
' "$tmp/json"
fi

# --- cache types: an int8 cache scored against the f32 model with its exact f32 cache ----------
"$ZQ" eval "$T" -m "$tmp/f32.zq" -m "$tmp/int8.zq" --text "$tmp/slice.tsv" --json -q \
    --kv-type int8 --ref-kv-type f32 >"$tmp/kv.json"
check kv_exit0 test $? -eq 0
if command -v python3 >/dev/null; then
    check kv_values python3 -c '
import json, sys
ref, q = json.load(open(sys.argv[1]))["models"]
assert ref["kv_type"] == "f32", ref
assert ref["kld_mean"] == 0, ref
assert q["kv_type"] == "int8", q
assert 0 < q["kld_mean"] < 0.005, q
' "$tmp/kv.json"
fi
"$ZQ" eval "$T" -m "$tmp/int8.zq" --text "$tmp/slice.tsv" --ref-kv-type q4 2>"$tmp/err"
check kv_bad_exit2 test $? -eq 2
check kv_bad_names_option grep -q "invalid value 'q4' for --ref-kv-type" "$tmp/err"

# --- per layer, sliding window, plain text, token limit ---------------------------------------
"$ZQ" eval "$T" -m "$tmp/f32.zq" -m "$tmp/int8.zq" --text "$tmp/slice.tsv" --per-layer -q \
    >"$tmp/layers"
check per_layer_rows grep -Eq "int8\.zq +h\.5 +0\.99" "$tmp/layers"
check per_layer_ln_f grep -Eq "int8\.zq +ln_f " "$tmp/layers"
"$ZQ" eval "$T" -m "$tmp/int8.zq" --text "$tmp/slice.tsv" --window 64 --stride 16 \
    --max-tokens 200 --json -q >"$tmp/sliding"
check sliding_scores_all_but_first grep -q '"scored":	199,' "$tmp/sliding"
printf '你好，今天天气怎么样？\n我们明天去哪里吃饭\n' >"$tmp/plain.txt"
"$ZQ" eval "$T" -m "$tmp/int8.zq" --text "$tmp/plain.txt" -q >"$tmp/plain"
check plain_framing grep -q "(plain framing)" "$tmp/plain"

# --- errors -----------------------------------------------------------------------------------
expect_error missing_text 1 "none: cannot open" -- \
    eval "$T" -m "$tmp/f32.zq" --text "$tmp/none"
mkfifo "$tmp/fifo"
expect_error fifo_text 1 "not a regular file" -- eval "$T" -m "$tmp/f32.zq" --text "$tmp/fifo"
: >"$tmp/empty.txt"
expect_error empty_text 1 "is empty" -- eval "$T" -m "$tmp/f32.zq" --text "$tmp/empty.txt"
printf '你好\n\377\376\n' >"$tmp/bad.txt"
expect_error invalid_utf8 1 "line 2: invalid UTF-8" -- \
    eval "$T" -m "$tmp/f32.zq" --text "$tmp/bad.txt"
printf '\n\n' >"$tmp/short.txt"
expect_error one_token 1 "at least 2" -- eval "$T" -m "$tmp/f32.zq" --text "$tmp/short.txt"
"$ZQ" quantize "$T" models/zh-chat-tiny -o "$tmp/added.zq" --add-token 人工智能 -q \
    --zstd-level 1 2>/dev/null
expect_error vocab_mismatch 1 "different vocabularies" -- \
    eval "$T" -m "$tmp/f32.zq" -m "$tmp/added.zq" --text "$tmp/slice.tsv"
expect_error no_text 2 "expected --text FILE" -- eval "$T" -m "$tmp/f32.zq"
expect_error stride_over_window 2 "for --stride" -- \
    eval "$T" -m "$tmp/f32.zq" --text "$tmp/slice.tsv" --window 32 --stride 64
expect_error window_over_context 1 "outside 2..256" -- \
    eval "$T" -m "$tmp/f32.zq" --text "$tmp/slice.tsv" --window 1000
expect_error bad_format 2 "for --format" -- eval "$T" -m "$tmp/f32.zq" --text "$tmp/slice.tsv" \
    --format csv

# --- quantizer accuracy options ---------------------------------------------------------------
"$ZQ" quantize "$T" models/zh-chat-tiny -o "$tmp/smooth.zq" --calibrate "$tmp/slice.tsv" -q \
    --zstd-level 1 2>"$tmp/smooth.err"
check calibrate_writes test -s "$tmp/smooth.zq"
check calibrate_reports grep -q "migrated activation outliers (alpha 0.50)" "$tmp/smooth.err"
"$ZQ" eval "$T" -m "$tmp/f32.zq" -m "$tmp/smooth.zq" --text "$tmp/slice.tsv" --json -q \
    >"$tmp/smooth.json"
check calibrate_model_evaluates grep -q '"path":.*smooth.zq' "$tmp/smooth.json"
expect_error bad_alpha 2 "for --alpha" -- quantize "$T" models/zh-chat-tiny -o "$tmp/x.zq" \
    --calibrate "$tmp/slice.tsv" --alpha 2
expect_error calibrate_missing_text 1 "none: cannot open" -- quantize "$T" models/zh-chat-tiny \
    -o "$tmp/x.zq" --calibrate "$tmp/none"
check calibrate_failure_no_file test ! -e "$tmp/x.zq"
"$ZQ" quantize "$T" models/zh-chat-tiny -o "$tmp/head.zq" --keep-f16 wte.weight --zstd-level 1 \
    >"$tmp/head.table" 2>/dev/null
check keep_f16_head grep -Eq "^wte\.weight +f16 +3817x256" "$tmp/head.table"
check keep_f16_rest_int8 grep -Eq "^h\.0\.attn\.c_attn\.weight +int8" "$tmp/head.table"

exit $failed
