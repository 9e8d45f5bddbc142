#!/usr/bin/env bash
# Regenerates sparkplug/sparkplugb/sparkplug_b.pb.go from the vendored Eclipse Tahu
# sparkplug_b.proto. Needs protoc (Debian/Ubuntu: apt-get install protobuf-compiler).
# protoc-gen-go is pinned to the google.golang.org/protobuf version in go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.8

command -v protoc >/dev/null || { echo "gen-sparkplug: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"

PATH="$bin:$PATH" protoc \
	--proto_path=sparkplug/sparkplugb \
	--go_out=sparkplug/sparkplugb --go_opt=paths=source_relative \
	sparkplug/sparkplugb/sparkplug_b.proto
echo "gen-sparkplug: wrote sparkplug/sparkplugb/sparkplug_b.pb.go (protoc $(protoc --version | cut -d' ' -f2), protoc-gen-go ${PROTOC_GEN_GO_VERSION})"
