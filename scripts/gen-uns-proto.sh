#!/usr/bin/env bash
# Regenerates uns/unspb/uns_points.pb.go from docs/uns_points.proto, the
# published schema of uns.points records. The normaliser encodes and decodes
# with protowire by hand (no allocation per field); the generated type is
# what the tests check that encoding against, and what Go consumers may use.
# Needs protoc (apt-get install protobuf-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.8

command -v protoc >/dev/null || { echo "gen-uns-proto: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"

PATH="$bin:$PATH" protoc \
	--proto_path=docs \
	--go_out=uns/unspb --go_opt=paths=source_relative \
	docs/uns_points.proto
echo "gen-uns-proto: wrote uns/unspb/uns_points.pb.go (protoc $(protoc --version | cut -d' ' -f2), protoc-gen-go ${PROTOC_GEN_GO_VERSION})"
