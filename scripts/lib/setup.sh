# Shared by scripts/test, scripts/run, scripts/bench: installs what is missing
# (Debian packages only), then configures and builds into $BUILD_DIR.
# Knobs: BUILD_DIR (default build), BUILD_TYPE (default RelWithDebInfo), KVINDEX_SANITIZE,
# KVINDEX_FUZZ (ON: libFuzzer targets only; with CXX=clang++), KVINDEX_THREAD_SAFETY (ON: clang
# -Wthread-safety as errors; with CXX=clang++).

KVINDEX_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libxxhash-dev libspdlog-dev nlohmann-json3-dev
  libcpp-httplib-dev  # GET /metrics (server/metrics_http_server.cc)
  python3 python3-grpcio python3-grpc-tools grpc-proto openssl
  golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev python3-yaml  # chart check
  clang libclang-rt-14-dev  # libFuzzer targets (scripts/fuzz, scripts/test --fuzz)
  # Go client (client/go, tests/go): stubs and offline builds; the 1.5 golang/protobuf (APIv2-based,
  # not the 1.3 that apt may pick for grpc) is what protoc-gen-go's messages need
  protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev
)

kvindex_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# Installs the packages (KVINDEX_PACKAGES and any named as arguments) that are
# not installed yet; runs apt-get update only then.
kvindex_install_missing() {
  local missing=() p
  for p in "${KVINDEX_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "kvindex: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Configures (once) and builds incrementally.
kvindex_build() {
  local root build_dir
  root=$(kvindex_root)
  build_dir="$root/${BUILD_DIR:-build}"
  if [ ! -f "$build_dir/build.ninja" ]; then
    cmake -S "$root" -B "$build_dir" -G Ninja \
      -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
      -DKVINDEX_SANITIZE="${KVINDEX_SANITIZE:-}" -DKVINDEX_FUZZ="${KVINDEX_FUZZ:-OFF}" \
      -DKVINDEX_THREAD_SAFETY="${KVINDEX_THREAD_SAFETY:-OFF}" \
      ${KVINDEX_WIRE_DIR:+-DKVINDEX_WIRE_DIR="$KVINDEX_WIRE_DIR"} >/dev/null
  fi
  cmake --build "$build_dir" -j "$(nproc)"
}
