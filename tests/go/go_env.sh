# Sourced by tests/go/go_test.sh: builds client/go offline (GOPATH mode over Debian's
# /usr/share/gocode; nothing is downloaded). Needs WORK (a scratch dir) and ROOT (the checkout).
export GO111MODULE=off GOPROXY=off GOFLAGS= GOENV=off GOTOOLCHAIN=local CGO_ENABLED=1
export GOPATH="$WORK/gopath:/usr/share/gocode" GOCACHE="$WORK/gocache"
mkdir -p "$WORK/gopath/src/kvindex.dev"
# kvindex.dev/client -> client/: the import path kvindex.dev/client/go/... is client/go/...
ln -sfn "$ROOT/client" "$WORK/gopath/src/kvindex.dev/client"
GO_PKG_DIR="$WORK/gopath/src/kvindex.dev/client/go"
