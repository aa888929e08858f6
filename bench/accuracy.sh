#!/bin/sh
# Regenerates the accuracy tables of docs/ACCURACY.md in bench/out/accuracy/ACCURACY-tables.md.
# It quantizes models/zh-chat-tiny and the synthetic gpt2-distil-shaped model to f32, f16 and
# several int8 variants, and scores them with `zq eval --json` against their f32 model on
# data/zh-dialogue-valid.tsv. The PyTorch dynamic-int8 peer (bench/torch_accuracy.py) runs on
# the same text with the same windows.
#
# usage: bench/accuracy.sh [--quick]
#
# --quick scores only the first 1,000 tokens, as a smoke run. Environment: BUILD (default
# build) contains the zq program; PYTHON (default /usr/bin/python3, Debian's, which has torch);
# THREADS (default: zq's and the peer's own defaults) sets the thread count, which changes the
# time taken but not the numbers; SYNTH_TOKENS (default 2048) is how many tokens of the text
# the synthetic model is scored on, because a full pass takes several minutes per model on two
# cores; CALIB_LINES (default 200) is how many dialogues of the text calibrate the migration.
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ZQ=$BUILD/zq
PYTHON=${PYTHON:-/usr/bin/python3}
TEXT=data/zh-dialogue-valid.tsv
OUT=bench/out/accuracy
SYNTH=bench/out/gpt2-distil-synth
SYNTH_TOKENS=${SYNTH_TOKENS:-2048}
CALIB_LINES=${CALIB_LINES:-200}
TINY_LIMIT=""
case "${1:-}" in
--quick)
    TINY_LIMIT="--max-tokens 1000"
    SYNTH_TOKENS=1000
    OUT=bench/out/accuracy-quick
    ;;
"") ;;
*)
    echo "usage: bench/accuracy.sh [--quick]" >&2
    exit 2
    ;;
esac
ZQ_THREADS=${THREADS:+--threads $THREADS}
PEER_THREADS=${THREADS:+--threads $THREADS}

if [ ! -x "$ZQ" ]; then
    echo "bench/accuracy.sh: $ZQ not found; run make first" >&2
    exit 1
fi
mkdir -p "$OUT"
# Calibration uses the first dialogues of the evaluation text: the migration keeps only one
# maximum per channel from it, and the repository has no other dialogue text.
head -n "$CALIB_LINES" "$TEXT" >"$OUT/calibration.tsv"

# quantize SRC NAME OPTIONS...: writes $OUT/NAME.zq.
quantize() {
    src=$1 name=$2
    shift 2
    echo "== quantize $name" >&2
    # shellcheck disable=SC2086
    "$ZQ" quantize "$src" -o "$OUT/$name.zq" -q --zstd-level 3 $ZQ_THREADS "$@"
}

# variants SRC PREFIX: the f32 reference, f16 and the int8 schemes compared in ACCURACY.md.
variants() {
    src=$1 p=$2
    quantize "$src" "$p-f32" --type f32
    quantize "$src" "$p-f16" --type f16
    quantize "$src" "$p-int8" --type int8
    quantize "$src" "$p-int8-g64" --type int8 --group 64
    quantize "$src" "$p-int8-g32" --type int8 --group 32
    quantize "$src" "$p-int8-head-f16" --type int8 --keep-f16 wte.weight
    quantize "$src" "$p-int8-smooth" --type int8 --calibrate "$OUT/calibration.tsv" \
        --calibrate-tokens 8192
    quantize "$src" "$p-int8-smooth-g64" --type int8 --group 64 \
        --calibrate "$OUT/calibration.tsv" --calibrate-tokens 8192
    quantize "$src" "$p-int8-smooth-head-f16" --type int8 --keep-f16 wte.weight \
        --calibrate "$OUT/calibration.tsv" --calibrate-tokens 8192
}

# evaluate PREFIX: scores every variant of PREFIX against its f32 file, with the token limit
# options in $LIMIT.
evaluate() {
    p=$1
    shift
    echo "== zq eval $p" >&2
    set --
    for v in f32 f16 int8 int8-g64 int8-g32 int8-head-f16 int8-smooth int8-smooth-g64 \
        int8-smooth-head-f16; do
        set -- "$@" -m "$OUT/$p-$v.zq"
    done
    # shellcheck disable=SC2086
    "$ZQ" eval "$@" --text "$TEXT" --per-layer --json -q $ZQ_THREADS $LIMIT >"$OUT/$p.json"
}

variants models/zh-chat-tiny zh-chat-tiny
LIMIT=$TINY_LIMIT
evaluate zh-chat-tiny
echo "== PyTorch peer, zh-chat-tiny" >&2
# shellcheck disable=SC2086
"$PYTHON" bench/torch_accuracy.py --model models/zh-chat-tiny --text "$TEXT" \
    --json "$OUT/zh-chat-tiny-torch.json" $PEER_THREADS \
    ${TINY_LIMIT:+--max-tokens 1000} >/dev/null

if [ ! -s "$SYNTH/model.safetensors" ]; then
    echo "== writing the synthetic model to $SYNTH" >&2
    "$PYTHON" bench/make_synthetic_model.py "$SYNTH"
fi
variants "$SYNTH" synth
LIMIT="--max-tokens $SYNTH_TOKENS"
evaluate synth
echo "== PyTorch peer, synthetic model" >&2
# shellcheck disable=SC2086
"$PYTHON" bench/torch_accuracy.py --model "$SYNTH" --text "$TEXT" --max-tokens "$SYNTH_TOKENS" \
    --json "$OUT/synth-torch.json" $PEER_THREADS >/dev/null

"$PYTHON" - "$OUT" <<'EOF' >"$OUT/ACCURACY-tables.md"
import json, os, sys

out = sys.argv[1]


def rows(name):
    zq = json.load(open(os.path.join(out, name + ".json")))
    peer = json.load(open(os.path.join(out, name + "-torch.json")))
    print(f"### {name}: {zq['tokens']} tokens, {zq['scored']} scored, window {zq['window']}\n")
    print("| model | MB | ppl | ppl ratio | KL mean | KL median | KL p99 | KL max | same top-1 "
          "| dp mean | dp RMS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    entries = [(os.path.basename(m["path"])[:-3], os.path.getsize(m["path"]) / 1e6, m)
               for m in zq["models"]]
    entries += [("PyTorch " + m["type"], None, m) for m in peer["models"]]
    for label, mb, m in entries:
        size = f"{mb:.2f}" if mb else ""
        print(f"| {label} | {size} | {m['ppl']:.5g} | {m['ppl_ratio']:.5f} | "
              f"{m['kld_mean']:.3g} | {m['kld_median']:.3g} | {m['kld_p99']:.3g} | "
              f"{m['kld_max']:.3g} | {100 * m['same_top1']:.2f}% | {m['dp_mean']:+.2g} | "
              f"{m['dp_rms']:.3g} |")
    print()
    layers = [m for m in zq["models"] if not m["reference"]]
    names = [layer["layer"] for layer in layers[0]["layers"]]
    print("Relative error of each layer's output against f32 (mean over scored tokens):\n")
    print("| model | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for m in layers:
        cells = " | ".join(f"{layer['rel_err']:.2e}" for layer in m["layers"])
        print(f"| {os.path.basename(m['path'])[:-3]} | {cells} |")
    print()


rows("zh-chat-tiny")
rows("synth")
EOF
echo "bench/accuracy.sh: wrote $OUT/ACCURACY-tables.md" >&2
