#!/bin/sh
# Historian vs VictoriaMetrics single-node on the same synthetic data set
# (historian/synth, seed 1, 1 Hz), in the same run. Prints one JSON line per
# system: samples, ingest rate, bytes per sample on disk.
#
#   scripts/bench-historian.sh                 # 1,000 tags x 1 day
#   TAGS=200 DURATION=6h scripts/bench-historian.sh
#   VM_BIN=/path/to/victoria-metrics scripts/bench-historian.sh
#
# VictoriaMetrics is built from the Go module proxy into a temporary
# directory (its go.mod has replace directives, so `go install pkg@version`
# refuses it: the module source is downloaded and built as the main module).
set -eu
VM_VERSION=${VM_VERSION:-v0.0.0-20250718125606-9d9bea03485e}
TAGS=${TAGS:-1000}
DURATION=${DURATION:-24h}
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
if [ -z "${VM_BIN:-}" ]; then
	src=$(go mod download -json "github.com/VictoriaMetrics/VictoriaMetrics@$VM_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$src" ] || { echo "bench-historian: could not download VictoriaMetrics $VM_VERSION" >&2; exit 1; }
	cp -r "$src" "$work/vm"
	chmod -R u+w "$work/vm"
	(cd "$work/vm" && GOFLAGS="-buildvcs=false -mod=mod" go build -o "$work/victoria-metrics" ./app/victoria-metrics) >&2
	VM_BIN="$work/victoria-metrics"
fi
echo "bench-historian: $TAGS tags x $DURATION, VictoriaMetrics $VM_VERSION ($VM_BIN)" >&2
go run ./historian/internal/peerbench -vm "$VM_BIN" -tags "$TAGS" -duration "$DURATION"
