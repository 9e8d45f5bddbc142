#!/usr/bin/env bash
# Embedded log append benchmarks, next to the same disk's sequential write
# bandwidth measured with dd in the same run.
# Usage: scripts/bench-log.sh [DIR] [BENCHTIME]
#   DIR        where the logs and the dd test file go (default: a temp dir under
#              ./data's filesystem, i.e. the repository's disk)
#   BENCHTIME  go test -benchtime (default 2s)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-$PWD}
benchtime=${2:-2s}
work=$(mktemp -d "$base/.bench-log.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
echo "# disk: $(df -h "$work" | awk 'NR==2 {print $1, $2}') ($(df -T "$work" 2>/dev/null | awk 'NR==2 {print $2}'))"
echo "# $(go version)"
echo

dd_run() {
  dd if=/dev/zero of="$work/ddtest" bs=1M count=512 oflag=direct conv=fdatasync 2>&1 | tail -1
  rm -f "$work/ddtest"
}
echo "## dd before: dd if=/dev/zero of=$work/ddtest bs=1M count=512 oflag=direct conv=fdatasync"
dd_run
echo

echo "## go test -run '^\$' -bench 'BenchmarkProduce|BenchmarkGroupCommitInterval|BenchmarkDiskFlush' -benchtime $benchtime ./log/embedded/"
MILLSTREAM_BENCH_DIR="$work" go test -run '^$' -bench 'BenchmarkProduce|BenchmarkGroupCommitInterval|BenchmarkDiskFlush' \
  -benchtime "$benchtime" ./log/embedded/ | grep -E '^(Benchmark|cpu|ok|FAIL)'
echo

echo "## dd after"
dd_run
