#!/bin/sh
# End-to-end checks of the zq program: quantize the embedded model, run, chat, tokenize, and
# the errors users see. Prints one PASS/FAIL line per check; exits 1 if any failed.
set -u
ZQ=${ZQ_BIN:-build/zq}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0

pass() { echo "PASS cli_$1"; }
fail() { echo "FAIL cli_$1: $2"; failed=1; }
# check NAME CONDITION-COMMAND... : runs the condition, PASS if it succeeds.
check() {
    name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name" "$*"; fi
}

# --- help and usage -------------------------------------------------------------------------
check help "$ZQ" --help >/dev/null
for cmd in quantize run chat tokenize; do
    check "help_$cmd" "$ZQ" "$cmd" --help >/dev/null
done
"$ZQ" frobnicate >/dev/null 2>"$tmp/err"
check unknown_command_exit2 test $? -eq 2
check unknown_command_message grep -q "unknown command 'frobnicate'" "$tmp/err"

# --- quantize ---------------------------------------------------------------------------------
for t in int8 f16 f32; do
    "$ZQ" quantize models/zh-chat-tiny -o "$tmp/zh-$t.zq" --type "$t" -q --zstd-level 3 \
        2>"$tmp/q-$t.err"
    check "quantize_$t" test -s "$tmp/zh-$t.zq"
done
size() { stat -c %s "$1"; }
check int8_smaller_than_f16 test "$(size "$tmp/zh-int8.zq")" -lt "$(size "$tmp/zh-f16.zq")"
check f16_smaller_than_f32 test "$(size "$tmp/zh-f16.zq")" -lt "$(size "$tmp/zh-f32.zq")"
check quantize_no_temp_files test -z "$(ls "$tmp" | grep tmp)"
"$ZQ" quantize models/zh-chat-tiny -o "$tmp/table.zq" --zstd-level 1 >"$tmp/table" 2>/dev/null
check quantize_error_table grep -q "^h.0.mlp.c_fc.weight *int8 *1024x256" "$tmp/table"
"$ZQ" quantize /nonexistent -o "$tmp/x.zq" 2>"$tmp/err"
check quantize_missing_dir_fails test $? -eq 1
check quantize_missing_dir_no_file test ! -e "$tmp/x.zq"
"$ZQ" quantize models/zh-chat-tiny -o "$tmp/x.zq" --type int4 2>"$tmp/err"
check quantize_bad_type_exit2 test $? -eq 2
check quantize_bad_type_message grep -q "invalid value 'int4' for --type" "$tmp/err"

mkdir "$tmp/src" && cp models/zh-chat-tiny/*.json models/zh-chat-tiny/vocab.txt \
    models/zh-chat-tiny/model.safetensors "$tmp/src/"
before=$(cksum <"$tmp/src/model.safetensors")
"$ZQ" quantize "$tmp/src" -o "$tmp/src/model.safetensors" 2>"$tmp/err"
check quantize_onto_source_exit2 test $? -eq 2
check quantize_onto_source_message grep -q "is one of the source files" "$tmp/err"
check quantize_onto_source_kept test "$(cksum <"$tmp/src/model.safetensors")" = "$before"
"$ZQ" quantize "$tmp/src" -o "" 2>"$tmp/err"
check quantize_empty_output_exit2 test $? -eq 2
"$ZQ" quantize "$tmp/src" -o "$tmp" 2>"$tmp/err"
check quantize_output_folder_exit2 test $? -eq 2
check quantize_output_folder_message grep -q "is a folder" "$tmp/err"

# --- tokenize ---------------------------------------------------------------------------------
out=$("$ZQ" tokenize -m "$tmp/zh-int8.zq" "你好，世界！")
check tokenize_ids test "$out" = "136 149 73 605 764 75"
out=$("$ZQ" tokenize -m "$tmp/zh-int8.zq" --tokens "Hello World")
check tokenize_tokens test "$out" = "h ##e ##l ##l ##o w ##o ##r ##l ##d"
"$ZQ" quantize models/zh-chat-tiny -o "$tmp/added.zq" --add-token 人工智能 -q --zstd-level 1 \
    2>/dev/null
out=$("$ZQ" tokenize -m "$tmp/added.zq" --tokens "我爱人工智能")
check added_token_kept_whole test "$out" = "我 爱 人工智能"
out=$("$ZQ" tokenize -m "$tmp/added.zq" "人工智能")
check added_token_id test "$out" = "3817"

"$ZQ" tokenize -m "$tmp/zh-int8.zq" "$(printf 'ab\377cd')" 2>"$tmp/err"
check tokenize_invalid_utf8_exit2 test $? -eq 2
check tokenize_invalid_utf8_message grep -q "invalid UTF-8 in the text at byte 2" "$tmp/err"

# --- run --------------------------------------------------------------------------------------
# Greedy decoding of the f32 model follows the float64 reference continuation of "你好".
out=$("$ZQ" run -m "$tmp/zh-f32.zq" -p "你好" --temperature 0 --repetition-penalty 1)
check run_f32_greedy_matches_reference test "$out" = "我们在这儿"
a=$("$ZQ" run -m "$tmp/zh-int8.zq" -p "你好，你是谁？" --seed 7 --max-new-tokens 20)
b=$("$ZQ" run -m "$tmp/zh-int8.zq" -p "你好，你是谁？" --seed 7 --max-new-tokens 20)
check run_seed_repeats test -n "$a" -a "$a" = "$b"
check run_prints_one_line test "$(printf '%s\n' "$a" | wc -l)" -eq 1
out=$("$ZQ" run -m "$tmp/zh-f16.zq" -p "你好" --temperature 0 --repetition-penalty 1)
check run_f16 test -n "$out"
# An f16 KV cache rounds keys and values but keeps the f32 model's greedy reply here.
out=$("$ZQ" run -m "$tmp/zh-f32.zq" -p "你好" --temperature 0 --repetition-penalty 1 \
    --kv-type f16)
check run_f32_with_f16_cache test "$out" = "我们在这儿"
out=$("$ZQ" run -m "$tmp/zh-int8.zq" -p "你好" --temperature 0 --kv-type int8)
check run_int8_cache test -n "$out"
"$ZQ" run -m "$tmp/zh-int8.zq" -p "你好" --kv-type q4 2>"$tmp/err"
check run_bad_kv_type_exit2 test $? -eq 2
check run_bad_kv_type_message grep -q "invalid value 'q4' for --kv-type" "$tmp/err"
check serve_help_kv_type sh -c "\"$ZQ\" serve --help | grep -q -- --kv-type"
"$ZQ" run -m "$tmp/zh-int8.zq" -p "你好" --temperature -1 2>"$tmp/err"
check run_bad_temperature_exit2 test $? -eq 2
check run_bad_temperature_message grep -q "invalid value '-1' for --temperature" "$tmp/err"
"$ZQ" run -m "$tmp/none.zq" -p "你好" 2>"$tmp/err"
check run_missing_model_fails test $? -eq 1
check run_missing_model_message grep -q "none.zq' not found" "$tmp/err"
head -c 1000 "$tmp/zh-int8.zq" >"$tmp/cut.zq"
"$ZQ" run -m "$tmp/cut.zq" -p "你好" 2>"$tmp/err"
check run_truncated_model_fails test $? -eq 1
check run_truncated_model_names_file grep -q "cut.zq" "$tmp/err"

"$ZQ" run -m "$tmp/zh-int8.zq" -p "" 2>"$tmp/err"
check run_empty_prompt_exit2 test $? -eq 2
# A prompt of 200 tokens leaves less than --max-new-tokens of room: the reply gets what is left.
long=$(printf '我们%.0s' $(seq 100))
out=$("$ZQ" run -m "$tmp/zh-int8.zq" -p "$long" --seed 1 --max-new-tokens 64)
check run_long_prompt_replies test $? -eq 0
long=$(printf '我们%.0s' $(seq 130))
"$ZQ" run -m "$tmp/zh-int8.zq" -p "$long" 2>"$tmp/err"
check run_too_long_prompt_fails test $? -eq 1
check run_too_long_prompt_counts grep -q "the message has 260 tokens" "$tmp/err"

# --- chat -------------------------------------------------------------------------------------
printf '你好\n你是谁\n你去哪儿了\n我们需要谈谈\n/reset\n你好\n' |
    "$ZQ" chat -m "$tmp/zh-int8.zq" -v --temperature 0 --max-new-tokens 16 \
        >"$tmp/chat.out" 2>"$tmp/chat.err"
check chat_exit0 test $? -eq 0
check chat_one_reply_per_line test "$(wc -l <"$tmp/chat.out")" -eq 5
hist=$(grep -o 'history [0-9][0-9]*' "$tmp/chat.err" | cut -d' ' -f2 | tr '\n' ' ')
check chat_keeps_three_exchanges test "$hist" = "1 2 3 3 1 "
first=$(sed -n 1p "$tmp/chat.out")
after_reset=$(sed -n 5p "$tmp/chat.out")
check chat_reset_repeats_first_reply test "$first" = "$after_reset"

printf '你好\n你是谁\n你去哪儿了\n' |
    "$ZQ" chat -m "$tmp/zh-int8.zq" -v --history 1 --temperature 0 --max-new-tokens 8 \
        >/dev/null 2>"$tmp/chat.err"
hist=$(grep -o 'history [0-9][0-9]*' "$tmp/chat.err" | cut -d' ' -f2 | tr '\n' ' ')
check chat_history_option test "$hist" = "1 1 1 "

printf '/help\n/nonsense\n你好\n/QUIT\n你好\n' |
    "$ZQ" chat -m "$tmp/zh-int8.zq" --temperature 0 --max-new-tokens 8 >"$tmp/chat.out" \
        2>"$tmp/chat.err"
check chat_commands_not_sent test "$(wc -l <"$tmp/chat.out")" -eq 1
check chat_unknown_command_message grep -q "unknown command '/nonsense'" "$tmp/chat.err"

# Turns of 100 characters: with 64 new tokens reserved, the 256-token context holds only one
# earlier exchange, so the oldest are dropped instead of failing.
long=$(printf '我们%.0s' $(seq 50))
printf '%s\n%s\n%s\n' "$long" "$long" "$long" |
    "$ZQ" chat -m "$tmp/zh-int8.zq" -v --temperature 0 --max-new-tokens 64 \
        >"$tmp/chat.out" 2>"$tmp/chat.err"
check chat_overflow_exit0 test $? -eq 0
hist=$(grep -o 'history [0-9][0-9]*' "$tmp/chat.err" | tail -n 1 | cut -d' ' -f2)
check chat_overflow_drops_oldest test "$hist" -lt 3

# --- sensitive-word filter in chat ------------------------------------------------------------
plain=$(printf '你好\n' | "$ZQ" chat -m "$tmp/zh-int8.zq" --temperature 0 --max-new-tokens 8)
# The reply is Chinese, so its first two characters are its first 6 bytes (cut -c counts bytes
# in the C locale).
word=$(printf '%s' "$plain" | head -c 6)
printf '%s\n坏蛋\n' "$word" >"$tmp/words.txt"
printf '你好\n你是坏 蛋吗\n' |
    "$ZQ" chat -m "$tmp/zh-int8.zq" --temperature 0 --max-new-tokens 8 \
        --filter-words "$tmp/words.txt" --filter-reply "不能回答" >"$tmp/filter.out"
check chat_filter_masks_reply test "$(sed -n 1p "$tmp/filter.out")" = "**$(printf '%s' "$plain" | tail -c +7)"
check chat_filter_refuses_input test "$(sed -n 2p "$tmp/filter.out")" = "不能回答"
printf '\377\n' >"$tmp/bad-words.txt"
printf '你好\n' | "$ZQ" chat -m "$tmp/zh-int8.zq" --filter-words "$tmp/bad-words.txt" \
    >/dev/null 2>"$tmp/err"
check chat_filter_bad_file_fails test $? -eq 1

exit $failed
