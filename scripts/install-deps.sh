#!/usr/bin/env bash
# Installs the external peers the tests talk to (DESIGN.md, Testing): the
# mosquitto broker and clients and kcat (Debian), and Eclipse Tahu's Sparkplug B
# client (npm). apt needs root or sudo; without them it says what is
# missing, and those tests skip (or fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=sudo; else sudo=none; fi
  if [ "$sudo" = none ]; then
    echo "install-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or the tests that need them skip" >&2
  else
    echo "install-deps: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# Eclipse Tahu's Sparkplug B client (npm sparkplug-client) for the Sparkplug
# integration test: a real edge node written by others.
tahu=cmd/millstream/testdata/tahu
if [ ! -d "$tahu/node_modules/sparkplug-client" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm ci in $tahu" >&2
    (cd "$tahu" && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "install-deps: npm is missing; the Tahu edge node test skips (or fails under CI=true)" >&2
  fi
fi

# MinIO, a real S3-compatible server, for the historian's Parquet tier tests
# (built from the Go module proxy; a few minutes the first time).
scripts/install-s3.sh
