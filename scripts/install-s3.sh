#!/bin/sh
# Installs the MinIO server (an S3-compatible object store), built from the
# Go module proxy, for the historian's Parquet tier tests
# (historian/s3_test.go finds it on PATH, in $GOPATH/bin or through
# MILLSTREAM_MINIO). Build takes a few minutes on 2 cores.
#
#   scripts/install-s3.sh            # into $(go env GOPATH)/bin
#   GOBIN=/usr/local/bin scripts/install-s3.sh
set -eu
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
bin="${GOBIN:-$(go env GOPATH)/bin}"
if [ -x "$bin/minio" ]; then
	echo "minio already installed: $bin/minio"
	exit 0
fi
mkdir -p "$bin"
GOBIN="$bin" GOFLAGS=-buildvcs=false go install "github.com/minio/minio@$MINIO_VERSION"
echo "installed $bin/minio"
