#!/bin/sh
# Compares ZQ's tokenizer with the npm package @huggingface/tokenizers, a separate JavaScript
# implementation, on 4,000 generated strings (Chinese, Latin, digits, punctuation, accents,
# full-width, emoji, whitespace and controls, some with added tokens). Prints SKIP and passes
# only when node is not installed. The package comes from `npm ci --prefix tests/tools`.
# ZQ_SEED changes the fixed seed.
set -u
name=tokenizer_npm_agrees
tools=tests/tools
bin=${ZQ_BUILD:-build}/tests/test_tokenizer
seed=${ZQ_SEED:-20240611}
count=4000

if ! command -v node >/dev/null 2>&1; then
    echo "SKIP $name: node is not installed"
    exit 0
fi
if [ ! -f "$tools/node_modules/@huggingface/tokenizers/package.json" ]; then
    echo "FAIL $name: @huggingface/tokenizers is missing; run: npm ci --prefix $tools"
    exit 1
fi
if [ ! -x "$bin" ]; then
    echo "FAIL $name: $bin is not built; run: make"
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$name: seed $seed, $count strings" >&2
node "$tools/tokenizer_reference.mjs" gen "$seed" "$count" >"$tmp/lines.jsonl" &&
    node "$tools/tokenizer_reference.mjs" encode models/zh-chat-tiny/vocab.txt \
        "$tmp/lines.jsonl" >"$tmp/npm.txt" &&
    ZQ_TOKENIZER_LINES="$tmp/lines.jsonl" "$bin" >"$tmp/zq.txt"
if [ $? -ne 0 ]; then
    echo "FAIL $name: a tokenizer run failed (seed $seed)"
    exit 1
fi

lines=$(wc -l <"$tmp/lines.jsonl")
zq_lines=$(wc -l <"$tmp/zq.txt")
npm_lines=$(wc -l <"$tmp/npm.txt")
if [ "$zq_lines" -ne "$lines" ] || [ "$npm_lines" -ne "$lines" ]; then
    echo "FAIL $name: $lines strings but $zq_lines lines from zq, $npm_lines from npm"
    exit 1
fi
# Line numbers where the ids differ; the first few are shown with their text.
awk 'NR == FNR { want[FNR] = $0; next } want[FNR] != $0 { print FNR }' \
    "$tmp/npm.txt" "$tmp/zq.txt" >"$tmp/diff"
bad=$(wc -l <"$tmp/diff")
if [ "$bad" -ne 0 ]; then
    head -n 5 "$tmp/diff" | while read -r n; do
        echo "text: $(sed -n "${n}p" "$tmp/lines.jsonl")" >&2
        echo "  npm: $(sed -n "${n}p" "$tmp/npm.txt")" >&2
        echo "  zq:  $(sed -n "${n}p" "$tmp/zq.txt")" >&2
    done
    echo "FAIL $name: $bad of $lines strings differ (seed $seed)"
    exit 1
fi
echo "PASS $name"
