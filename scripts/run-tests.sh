#!/bin/sh
# Runs every test program (build/tests/test_*) and every end-to-end script (tests/e2e/*.sh),
# counts the PASS and FAIL lines they print, and ends with "N passed, N failed".
set -u
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
export ZQ_BIN="$BUILD/zq"
export ZQ_BUILD="$BUILD"
log=$(mktemp)
status=0

for t in "$BUILD"/tests/test_* tests/e2e/*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.d | *.o) continue ;; esac
    echo "== $t" >&2
    if [ "${t%.sh}" != "$t" ]; then
        sh "$t" >"$log.out" 2>"$log.err"
    else
        "$t" >"$log.out" 2>"$log.err"
    fi
    rc=$?
    cat "$log.out" >>"$log"
    grep -E '^(PASS|FAIL) ' "$log.out"
    if [ $rc -ne 0 ]; then
        status=1
        echo "-- $t exited $rc; its stderr:" >&2
        tail -n 40 "$log.err" >&2
        if ! grep -q '^FAIL ' "$log.out"; then
            echo "FAIL $t (exit $rc)" >>"$log"
        fi
    fi
done

passed=$(grep -c '^PASS ' "$log")
failed=$(grep -c '^FAIL ' "$log")
rm -f "$log" "$log.out" "$log.err"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ $status -eq 0 ]
