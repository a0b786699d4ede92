#!/usr/bin/env bash
# ctest: `scripts/run --demo --demo_seconds=5` on the binaries already built (KVINDEX_SKIP_SETUP=1:
# no install, no build); passes when it showed the hybrid pod (sim-0) with its groups and CPU tier,
# printed Match answers with cached tokens and stopped cleanly.
# Usage: demo_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
root=$1
bin=$2
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! KVINDEX_SKIP_SETUP=1 KVINDEX_BIN_DIR="$bin" "$root/scripts/run" --demo --demo_seconds=5 >"$out" 2>&1; then
  cat "$out"
  echo "demo_test: scripts/run --demo failed" >&2
  exit 1
fi
cat "$out"
grep -Eq -- '-> sim-[0-9]+: [1-9][0-9]* tokens cached \([0-9]+ blocks: [0-9]+ on (GPU|CPU)' "$out" ||
  { echo "demo_test: no Match answer with cached tokens" >&2; exit 1; }
grep -Eq 'demo: default/sim-0 is a hybrid pod with a CPU tier: group 0 full_attention .*group 1 sliding_window of 64 tokens .*on CPU [1-9]' "$out" ||
  { echo "demo_test: the hybrid pod with a CPU tier was not shown" >&2; exit 1; }
grep -q 'demo: [1-9][0-9]* of [0-9]* Match answers had cached tokens' "$out" ||
  { echo "demo_test: no summary" >&2; exit 1; }
