#!/bin/sh
# Prints where the forward pass spends its time: matrix products (with the GELU and residual
# adds they apply), attention, layer norms and the output head, for decode and for prefill.
#
# usage: bench/profile.sh [--cpu-time] MODEL.zq [zq bench model options]
#   e.g. bench/profile.sh bench/out/gpt2-distil-synth-int8.zq --threads 2 --decode 64
#
# It builds a copy of zq in a temporary folder, with runtime/forward.c rewritten by
# bench/profile_forward.py to time each step. The copy links the objects of $BUILD (default
# build, so run make first) and runs `zq bench model`. The timers cost about a
# microsecond per token. --cpu-time times the calling thread's CPU time instead of wall time,
# which leaves out the time other processes hold the core; it is meant for --threads 1.
# The copy is compiled with the Makefile's default switches (OPENMP=1 DNNL=1).
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
clock=""
if [ "${1:-}" = "--cpu-time" ]; then
    clock=-DPROFILE_THREAD_CPU_TIME
    shift
fi
if [ $# -lt 1 ]; then
    echo "usage: bench/profile.sh [--cpu-time] MODEL.zq [zq bench model options]" >&2
    exit 2
fi
model=$1
shift
[ -f "$BUILD/libzq.a" ] || {
    echo "profile: error: $BUILD/libzq.a not found: run make first (or set BUILD)" >&2
    exit 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" bench/profile_forward.py runtime/forward.c "$tmp/forward.c"
gcc -std=c11 -D_GNU_SOURCE -O2 -g -fopenmp -DZQ_USE_OPENMP=1 -DZQ_USE_DNNL=1 $clock \
    -Iruntime -c "$tmp/forward.c" -o "$tmp/forward.o"
cp "$BUILD/libzq.a" "$tmp/libzq.a"
ar d "$tmp/libzq.a" forward.o
ar rcs "$tmp/libzq.a" "$tmp/forward.o"
# shellcheck disable=SC2046
gcc -o "$tmp/zq" $(ls "$BUILD"/obj/cli/*.o "$BUILD"/obj/server/*.o) "$tmp/libzq.a" \
    -lzstd -lcjson -lzip -lutf8proc -lmicrohttpd -lhiredis -lm -lpthread -fopenmp -ldnnl
"$tmp/zq" bench model -m "$model" "$@"
