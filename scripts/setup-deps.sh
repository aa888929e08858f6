#!/bin/sh
# Installs the Debian packages that ZQ builds and tests with, but only those that are missing,
# so repeated `make` runs cost one dpkg query each. Pass --bench to add the benchmark peers, or
# --test-tools to install the npm package that the tokenizer cross-check test compares against.
set -eu

PACKAGES="gcc make pkg-config libzstd-dev libcjson-dev libzip-dev libutf8proc-dev libdnnl-dev
libmicrohttpd-dev libhiredis-dev redis-server nginx-light curl jq"
BENCH_PACKAGES="python3 python3-torch python3-numpy python3-matplotlib libopenblas0-pthread"

if [ "${1:-}" = "--test-tools" ]; then
    # Node.js may come from Debian (nodejs + npm) or elsewhere; only install it when absent.
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "setup-deps: installing nodejs npm" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >&2
    fi
    tools="$(dirname "$0")/../tests/tools"
    if [ ! -d "$tools/node_modules/@huggingface/tokenizers" ]; then
        echo "setup-deps: npm ci in tests/tools" >&2
        npm ci --prefix "$tools" --no-audit --no-fund >&2
    fi
    exit 0
fi
if [ "${1:-}" = "--bench" ]; then
    PACKAGES="$PACKAGES $BENCH_PACKAGES"
fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "setup-deps: installing:$missing" >&2
if [ "$(id -u)" != 0 ]; then
    echo "setup-deps: error: root is needed to install packages; run: sudo apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >&2
