#!/bin/sh
# Runs the whole ZQ benchmark in one go and writes bench/results.json, bench/RESULTS.md and
# bench/chart.png (what `make bench` runs).
#
# usage: bench/run.sh [--quick]
#
# Steps:
# - write the synthetic gpt2-distil-shaped model if it is missing;
# - quantize it and models/zh-chat-tiny to f32, f16 and int8 .zq files;
# - measure the memory read bandwidth on 1 and 2 threads, and time the kernels;
# - run `zq bench model --json` per model, type and thread count, each in its own process
#   because peak RSS is per process, and profile the int8 synthetic model (bench/profile.sh);
# - run the PyTorch fp32 and int8 peers on the same Hugging Face folders with the same prompt
#   length and decode count;
# - collect the JSON lines into results.json and write the report (bench/report.py).
#
# --quick is a smoke run of every step with tiny sizes (a 2-layer, 128-wide synthetic model,
# short prompts, one repeat); it writes into bench/out/quick/ and leaves the real results
# alone. Environment: BUILD (default build) is the folder of the zq program; PYTHON (default
# /usr/bin/python3, Debian's, which has torch and matplotlib); STEP_TIMEOUT (seconds, default
# 600) bounds each step; BENCH_NICE (default -10 when run as root, else 0) is the nice value
# of every measured process, ZQ's and PyTorch's alike, so that other work on a shared machine
# takes less of the cores. The report records the load average before and after.
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ZQ=$BUILD/zq
PYTHON=${PYTHON:-/usr/bin/python3}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
if [ "$(id -u)" = 0 ]; then
    BENCH_NICE=${BENCH_NICE:--10}
else
    BENCH_NICE=${BENCH_NICE:-0}
fi
QUICK=0
case "${1:-}" in
--quick) QUICK=1 ;;
"") ;;
*)
    echo "usage: bench/run.sh [--quick]" >&2
    exit 2
    ;;
esac

if [ "$QUICK" = 1 ]; then
    OUT=bench/out/quick
    SYNTH_NAME=gpt2-synth-quick
    SYNTH_OPTS="--layers 2 --embd 128 --heads 4 --ctx 256"
    PROMPT_LEN=32
    DECODE=8
    REPEATS=1
    BW_MB=32
    BW_PASSES=5
    KERNEL_OPTS=--quick
    RESULTS=$OUT/results.json
    REPORT=$OUT/RESULTS.md
    CHART=$OUT/chart.png
else
    OUT=bench/out
    SYNTH_NAME=gpt2-distil-synth
    SYNTH_OPTS=""
    PROMPT_LEN=512
    DECODE=128
    REPEATS=3
    BW_MB=512
    BW_PASSES=40
    KERNEL_OPTS=""
    RESULTS=bench/results.json
    REPORT=bench/RESULTS.md
    CHART=bench/chart.png
fi
SYNTH_DIR=$OUT/$SYNTH_NAME
PARTS=$OUT/parts
THREADS="1 2"

log() { echo "bench: $*" >&2; }
fail() {
    echo "bench: error: $*" >&2
    exit 1
}
# Runs a step under the time limit; a step that fails or times out stops the benchmark.
step() {
    timeout "$STEP_TIMEOUT" nice -n "$BENCH_NICE" "$@" ||
        fail "step failed or ran over ${STEP_TIMEOUT}s: $*"
}

[ -x "$ZQ" ] || fail "$ZQ not found: run make first (or set BUILD)"
"$PYTHON" -c "import numpy, torch, matplotlib" 2>/dev/null ||
    fail "$PYTHON lacks numpy, torch or matplotlib: run scripts/setup-deps.sh --bench"
mkdir -p "$PARTS"
rm -f "$PARTS"/*.jsonl
cut -d' ' -f1-3 /proc/loadavg >"$PARTS/loadavg_start.txt"
start=$(date +%s)

# --- models ---------------------------------------------------------------------------------
if [ ! -s "$SYNTH_DIR/model.safetensors" ]; then
    log "writing the synthetic model to $SYNTH_DIR"
    # shellcheck disable=SC2086
    step "$PYTHON" bench/make_synthetic_model.py "$SYNTH_DIR" $SYNTH_OPTS
fi

# Quantizes HF_DIR to $OUT/NAME-TYPE.zq unless a file newer than both the source and zq exists.
quantize() {
    src=$1 name=$2 type=$3
    dst=$OUT/$name-$type.zq
    if [ -s "$dst" ] && [ "$dst" -nt "$src/model.safetensors" ] && [ "$dst" -nt "$ZQ" ]; then
        return
    fi
    log "quantizing $src to $dst"
    step "$ZQ" quantize "$src" -o "$dst" --type "$type" -q
}

# Prints the prompt length that leaves room for $DECODE tokens in the model's positions.
prompt_len_for() {
    "$PYTHON" -c 'import json, sys
cfg = json.load(open(sys.argv[1] + "/config.json"))
print(min(int(sys.argv[2]), cfg["n_positions"] - int(sys.argv[3])))' "$1" "$PROMPT_LEN" "$DECODE"
}

MODELS="$SYNTH_NAME:$SYNTH_DIR zh-chat-tiny:models/zh-chat-tiny"
for entry in $MODELS; do
    for type in f32 f16 int8; do
        quantize "${entry#*:}" "${entry%%:*}" "$type"
    done
done

# --- machine: bandwidth and kernels ---------------------------------------------------------
# The bandwidth is measured at the start and after each model, each the best of many passes,
# and the report takes the best. Another job on a shared machine can take a core during a
# measurement, and 2-thread reads then ran at half speed.
measure_bandwidth() {
    for t in $THREADS; do
        log "read bandwidth, $t thread(s)"
        step "$ZQ" bench bandwidth --threads "$t" --mb "$BW_MB" --passes "$BW_PASSES" --json \
            >>"$PARTS/bandwidth.jsonl"
    done
}
measure_bandwidth
for t in $THREADS; do
    log "kernels, $t thread(s)"
    # shellcheck disable=SC2086
    step "$ZQ" bench kernels --threads "$t" $KERNEL_OPTS --json >>"$PARTS/kernels.jsonl"
done

# --- end to end -------------------------------------------------------------------------------
# Runs `zq bench model` for MODEL-TYPE.zq on THREADS threads, with extra environment settings
# after the first three arguments. On more than one thread it runs a second process too, and
# the report keeps the faster decode. While another job runs on one of the two cores, every
# OpenMP barrier waits for the descheduled thread, which can cut decoding five-fold.
# Each process also reads a buffer of $BW_MB MiB after its timed runs (bandwidth_gb_s in the
# record). The read bandwidth of a shared machine changes from one process to the next, with
# where the host runs its threads, so the targets compare decode with the bandwidth of the
# process that decoded.
zq_model() {
    name=$1 type=$2 t=$3 plen=$4
    shift 4
    tries=1
    [ "$t" -gt 1 ] && tries=2
    for _ in $(seq "$tries"); do
        log "zq $name $type, $t thread(s), prompt $plen, decode $DECODE $*"
        step env "$@" "$ZQ" bench model -m "$OUT/$name-$type.zq" --name "$name" \
            --threads "$t" --prompt-len "$plen" --decode "$DECODE" --repeats "$REPEATS" \
            --bandwidth-mb "$BW_MB" --json >>"$PARTS/records.jsonl"
    done
}

# Times each step of the forward pass (bench/profile.sh) for the int8 synthetic model with the
# given kernels (empty: the default) and threads, for the report. It needs the build's object
# files, so without them it is skipped with a note.
profile_int8() {
    plen=$1 kernels=$2 t=$3
    out="$PARTS/profile_${kernels:-default}_$t.txt"
    log "profile $SYNTH_NAME int8, $t thread(s), kernels ${kernels:-default}"
    # shellcheck disable=SC2086
    if ! timeout "$STEP_TIMEOUT" nice -n "$BENCH_NICE" env ${kernels:+ZQ_KERNELS=$kernels} \
        BUILD="$BUILD" PYTHON="$PYTHON" bench/profile.sh "$OUT/$SYNTH_NAME-int8.zq" \
        --threads "$t" --prompt-len "$plen" --decode "$DECODE" --repeats 1 >"$out" 2>&1; then
        log "profile failed (see $out); the report leaves it out"
        rm -f "$out"
    fi
}

for entry in $MODELS; do
    name=${entry%%:*} dir=${entry#*:}
    plen=$(prompt_len_for "$dir")
    for type in f32 f16 int8; do
        for t in $THREADS; do
            zq_model "$name" "$type" "$t" "$plen"
        done
    done
    # The fastest kernels on a CPU with AVX-512 VNNI are not what an AVX2-only CPU runs, so
    # the int8 2-thread case is repeated with the AVX2 kernels forced.
    vnni=""
    grep -qw avx512_vnni /proc/cpuinfo && vnni=1
    if [ -n "$vnni" ]; then
        zq_model "$name" int8 2 "$plen" ZQ_KERNELS=avx2
    fi
    if [ "$name" = "$SYNTH_NAME" ]; then
        profile_int8 "$plen" "" 1
        profile_int8 "$plen" "" 2
        [ -n "$vnni" ] && profile_int8 "$plen" avx2 2
    fi
    for engine in fp32 int8; do
        for t in $THREADS; do
            # With 2 threads PyTorch's OpenMP and OpenBLAS pools compete for the cores, so
            # every combination is tried in its own process and the fastest is kept.
            sweep=""
            [ "$t" -gt 1 ] && sweep=--sweep
            log "pytorch $name $engine, $t thread(s) $sweep"
            step "$PYTHON" bench/torch_peer.py --model "$dir" --engine "$engine" --threads "$t" \
                $sweep --prompt-len "$plen" --decode "$DECODE" --repeats "$REPEATS" \
                --json "$PARTS/records.jsonl" >/dev/null
        done
    done
    measure_bandwidth
done

# --- report -----------------------------------------------------------------------------------
log "collecting results after $(($(date +%s) - start)) s"
step "$PYTHON" bench/report.py --collect "$PARTS" --target-model "$SYNTH_NAME" \
    --synth-dir "$SYNTH_DIR" --zq-dir "$OUT" --seconds "$(($(date +%s) - start))" \
    --nice "$BENCH_NICE" \
    --out "$RESULTS" --md "$REPORT" --chart "$CHART"
log "wrote $RESULTS, $REPORT and $CHART"
