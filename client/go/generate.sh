#!/bin/bash
# Regenerates the Go stubs in kvindexv1/ from proto/kvindex/v1/kvindex.proto with
# Debian's protoc, protoc-gen-go and protoc-gen-go-grpc (scripts/lib/setup.sh installs them).
# The stubs are committed (Go's convention: `go get` users never run protoc).
#   generate.sh          rewrite kvindexv1/*.pb.go
#   generate.sh --check  exit 1 (with the diff) when the committed stubs are stale
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
pkg=kvindex.dev/client/go/kvindexv1
map="Mkvindex/v1/kvindex.proto=$pkg"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protoc -I "$root/proto" \
  --go_out="$out" --go_opt=paths=source_relative --go_opt="$map" \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative --go-grpc_opt="$map" \
  kvindex/v1/kvindex.proto
if [ "${1:-}" = "--check" ]; then
  if ! diff -ru "$here/kvindexv1" "$out/kvindex/v1" >"$out/diff"; then
    cat "$out/diff" >&2
    echo "client/go/kvindexv1 is stale: run client/go/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "client/go/kvindexv1 is up to date with proto/kvindex/v1/kvindex.proto"
  exit 0
fi
cp "$out/kvindex/v1/"*.go "$here/kvindexv1/"
