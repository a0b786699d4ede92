#!/usr/bin/env bash
# scripts/run --demo [--demo_seconds=N]: kvindex-server and kvindex-sim (4 simulated vLLM pods
# sharing system prompts, with a CPU offload tier; sim-0 a hybrid model, full attention + a sliding
# window, offloading in vLLM OffloadingConnector chunks) on free local ports, the sim's pods applied
# over gRPC with `kvindex pods apply`, the hybrid pod's groups and tiers as the server learned them
# from its events, then every second a few Match answers (which pod, cached tokens, GPU/CPU) until
# Ctrl-C, or for N seconds. Everything it started is stopped on exit.
# Usage: demo.sh BIN_DIR [--demo_seconds=N]   (scripts/run builds first, then calls this)
set -euo pipefail

bin=$1
shift
seconds=0
for arg in "$@"; do
  case "$arg" in
    --demo_seconds=*) seconds="${arg#--demo_seconds=}" ;;
    *) echo "usage: scripts/run --demo [--demo_seconds=N]" >&2; exit 2 ;;
  esac
done
for exe in kvindex-server kvindex-sim kvindex; do
  [ -x "$bin/$exe" ] || { echo "demo: $bin/$exe is not built" >&2; exit 1; }
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

work="$(mktemp -d "${TMPDIR:-/tmp}/kvindex-demo.XXXXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits up to $2 seconds for the command $1 to succeed; shows $3 and the logs when it does not.
await() {
  local deadline=$((SECONDS + $2))
  until eval "$1"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "demo: $3" >&2
      tail -n 20 "$work"/*.log >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

# kvindex-server: gRPC and metrics on ports the kernel picks; its line on stdout says which
# ("kvindex-server: grpc 127.0.0.1:PORT, metrics http://127.0.0.1:PORT/metrics").
"$bin/kvindex-server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 >"$work/server.log" 2>&1 &
pids+=($!)
await "grep -q '^kvindex-server: grpc ' '$work/server.log'" 20 "kvindex-server did not start"
server="$(sed -n 's/^kvindex-server: grpc \([^,]*\), metrics .*/\1/p' "$work/server.log" | head -n 1)"
metrics="$(sed -n 's/^kvindex-server: grpc [^,]*, metrics \(http:[^ ]*\)$/\1/p' "$work/server.log" | head -n 1)"

# kvindex-sim: 4 pods on ephemeral ports (written to pods.textproto once bound), small GPU caches
# offloading to CPU so that both tiers show, sample prompts with its ground truth every second.
# sim-0 is a hybrid model (group 1 a 64-token sliding window) whose GPU blocks go to CPU in chunks
# of 4 (vLLM's OffloadingConnector); the others offload evicted blocks one by one.
"$bin/kvindex-sim" --pods=4 --base_port=0 --pods_file="$work/pods.textproto" \
  --prompts_file="$work/prompts.json" --truth_interval=1s --rate=10 \
  --capacity_blocks=192 --cpu_capacity_blocks=512 --hybrid=window:64,none,none,none \
  --offload_chunk_blocks=4,0,0,0 --stats_interval=0 --log_level=warn >"$work/sim.log" 2>&1 &
pids+=($!)
await "[ -s '$work/pods.textproto' ]" 20 "kvindex-sim did not bind its sockets"

echo "demo: kvindex-server on $server (metrics: $metrics); kvindex-sim publishing 4 pods; applying them:"
"$bin/kvindex" pods apply -f "$work/pods.textproto" --server "$server"
# The hybrid pod as the server sees it (from its events alone): its KV cache groups and both tiers.
hybrid_pod() {
  "$bin/kvindex" pods list --server "$server" --json 2>/dev/null | python3 -c '
import json, sys
for pod in json.load(sys.stdin).get("pods", []):
    if pod.get("key") != "default/sim-0":
        continue
    for w in pod.get("workers", []):
        groups, tiers = w.get("groups", []), w.get("blocks_by_medium", {})
        if len(groups) < 2 or int(tiers.get("CPU", 0)) == 0:
            continue
        shown = ", ".join(
            "group %d %s%s (%s blocks)" % (g.get("group_idx", 0), g.get("kind", "?"),
                                           " of %d tokens" % g["sliding_window"] if g.get("sliding_window") else "",
                                           g.get("blocks", 0)) for g in groups)
        print("demo: default/sim-0 is a hybrid pod with a CPU tier: %s; blocks on GPU %s, on CPU %s"
              % (shown, tiers.get("GPU", 0), tiers.get("CPU", 0)))
        sys.exit(0)
sys.exit(1)'
}
await "hybrid_pod >'$work/hybrid.txt'" 30 "the server never showed sim-0's KV cache groups and CPU tier"
cat "$work/hybrid.txt"
echo "demo: try, from another terminal: $bin/kvindex pods list --server $server ; curl -s $metrics"
[ "$seconds" = 0 ] && echo "demo: Ctrl-C stops it all."

# In the background, so that a TERM to this script stops it too (cleanup); it takes Ctrl-C itself.
python3 "$here/demo_match.py" --kvindex "$bin/kvindex" --server "$server" --prompts "$work/prompts.json" \
  --seconds "$seconds" &
pids+=($!)
wait $!
