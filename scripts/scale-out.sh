#!/bin/sh
# scale-out.sh - runs N `zq serve` processes behind an nginx load balancer, with Redis for
# the shared sessions and response cache, all on loopback and all files in one temporary
# folder (no root, nothing written under /var). Prints the backend URLs and then
# "zq scale-out: ready at URL"; stops everything on Ctrl-C, SIGTERM or exit.
#
# usage: scripts/scale-out.sh [-n N] [-p PORT] [-m MODEL.zq] [-k] [-- ZQ-SERVE-OPTIONS...]
#   -n N      backend processes (default 2)
#   -p PORT   nginx port (default: a free port)
#   -m FILE   model for every backend (default: zq serve's default model)
#   -k        keep the temporary folder (logs, nginx.conf) after stopping
# Options after -- go to every `zq serve`, for example: -- --threads 1 --parallel 4
set -eu

here=$(cd "$(dirname "$0")" && pwd)
ZQ=${ZQ_BIN:-$here/../build/zq}
template=$here/nginx-zq.conf.in
n=2
port=0
model=""
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
    -n) n=$2; shift 2 ;;
    -p) port=$2; shift 2 ;;
    -m) model=$2; shift 2 ;;
    -k) keep=1; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scale-out: error: unknown option '$1'; run with --help" >&2; exit 2 ;;
    esac
done
case "$n" in
'' | *[!0-9]* | 0)
    echo "scale-out: error: -n needs a positive integer, got '$n'" >&2
    exit 2
    ;;
esac
# nginx lives in /usr/sbin, which is not on every user's PATH.
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for tool in redis-server redis-cli "$NGINX" perl curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "scale-out: error: $tool is not installed (scripts/setup-deps.sh lists it)" >&2
        exit 1
    fi
done
[ -x "$ZQ" ] || { echo "scale-out: error: $ZQ not found; run make or set ZQ_BIN" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/zq-scale-out.XXXXXX")
pids="" # started processes, newest first, so they stop in reverse order

cleanup() {
    trap - EXIT INT TERM
    for pid in $pids; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$keep" ]; then
        echo "zq scale-out: stopped; files kept in $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Asks the kernel for a free loopback port. Another program could take it before it is
# used; the start-up checks below then fail with the log to read.
free_port() {
    perl -MIO::Socket::INET -e \
        'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0")->sockport'
}

# wait_until DESCRIPTION COMMAND...: retries the command for up to 20 s.
wait_until() {
    what=$1
    shift
    tries=0
    while ! "$@" >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ $tries -ge 400 ]; then
            echo "scale-out: error: timed out waiting for $what; logs are in $tmp" >&2
            keep=1
            exit 1
        fi
        sleep 0.05
    done
}

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$tmp" --logfile "$tmp/redis.log" --daemonize no &
pids="$! $pids"
wait_until "redis on port $redis_port" sh -c "redis-cli -p $redis_port ping | grep -q PONG"
echo "zq scale-out: redis at redis://127.0.0.1:$redis_port"

backend_port() {
    sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$|\1|p' "$1"
}
backend_listening() { test -n "$(backend_port "$1")"; }

: >"$tmp/upstreams"
i=1
while [ "$i" -le "$n" ]; do
    log=$tmp/zq-$i.log
    "$ZQ" serve ${model:+-m "$model"} --port 0 --cache "redis://127.0.0.1:$redis_port" "$@" \
        2>"$log" &
    pids="$! $pids"
    wait_until "backend $i to listen" backend_listening "$log"
    bport=$(backend_port "$log")
    wait_until "backend $i to load its model" curl -sf "http://127.0.0.1:$bport/health"
    echo "        server 127.0.0.1:$bport max_fails=0;" >>"$tmp/upstreams"
    echo "zq scale-out: backend $i at http://127.0.0.1:$bport (log $log)"
    i=$((i + 1))
done

[ "$port" != 0 ] || port=$(free_port)
mkdir -p "$tmp/logs"
sed -e "s|@PREFIX@|$tmp|g" -e "s|@PORT@|$port|g" "$template" |
    awk -v file="$tmp/upstreams" '
        $0 == "@UPSTREAMS@" { while ((getline line < file) > 0) print line; next }
        { print }' >"$tmp/nginx.conf"
"$NGINX" -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/nginx-error.log" &
pids="$! $pids"
wait_until "nginx on port $port" curl -sf "http://127.0.0.1:$port/health"
echo "zq scale-out: ready at http://127.0.0.1:$port"

# Runs until a signal; the EXIT trap then stops nginx, the backends and redis.
wait
