#!/bin/bash
# ctest go_client_test: the Go client (client/go) built offline against Debian's Go packages:
# stubs not stale, gofmt and go vet clean, go test against real kvindex-server / kvindex-sim.
#   go_test.sh SOURCE_DIR BIN_DIR WORK_DIR
set -euo pipefail
ROOT=$1 BIN_DIR=$2 WORK=$3
mkdir -p "$WORK"
if ! command -v go >/dev/null; then
  echo "go_client_test: Go is missing (scripts/lib/setup.sh installs golang-go)" >&2
  exit 1
fi
"$ROOT/client/go/generate.sh" --check
source "$ROOT/tests/go/go_env.sh"
cd "$GO_PKG_DIR"
unformatted=$(gofmt -l . || true)
if [ -n "$unformatted" ]; then
  echo "gofmt: not formatted: $unformatted" >&2
  exit 1
fi
go vet ./...
go build ./...
export KVINDEX_BIN_DIR="$BIN_DIR" KVINDEX_SOURCE_DIR="$ROOT" KVINDEX_REQUIRE_BINARIES=1
rc=0
go test -count=1 -v ./... >"$WORK/go_test.log" 2>&1 || rc=$?
cat "$WORK/go_test.log"
exit $rc
