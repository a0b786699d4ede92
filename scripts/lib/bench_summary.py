#!/usr/bin/env python3
"""Combines the raw outputs of scripts/bench into one JSON file and prints the summary
table, each number beside the issue's target (issue 6).

Raw files (any may be missing; its rows then say n/a):
  prefix_index_bench.json, event_decoder_bench.json   Google Benchmark --benchmark_out JSON
  index_memory_bench.txt                              index_memory_bench stdout
  index_scale.json                                    index_scale_bench --json_file (one object per size)
  kvindex_bench_2048.json, kvindex_bench_2048_hashes.json, kvindex_bench_mix.json   kvindex-bench --json_file
  ingest_bench.json                                   kvindex-ingest-bench --json_file
"""

import argparse
import json
import os
import platform
import re
import subprocess


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_json_lines(path):
    """One JSON object per line; [] when the file is missing."""
    try:
        with open(path) as f:
            return sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["entries"])
    except (OSError, ValueError):
        return []


def machine_info(args):
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])

    def run(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    return {
        "date_utc": args.stamp,
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gib": round(mem_kb / 2**20, 1),
        "kernel": " ".join(platform.uname()[i] for i in (0, 2, 4)),
        "loadavg_start": args.loadavg_start,
        "loadavg_end": args.loadavg_end,
        "git_commit": run("git", "rev-parse", "HEAD"),
        "git_dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no")),
        "compiler": run("c++", "--version").splitlines()[0] if run("c++", "--version") else "",
        "build_dir": args.build_dir,
        "build_type": args.build_type,
        "compile_flags": compile_flags(args.build_dir, args.build_type),
        "quick": args.quick == "1",
    }


def compile_flags(build_dir, build_type):
    """The C++ flags the build type compiled with, from the build's CMakeCache.txt."""
    flags = {}
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            for line in f:
                m = re.match(r"(CMAKE_CXX_FLAGS(?:_[A-Z]+)?):STRING=(.*)", line.strip())
                if m:
                    flags[m.group(1)] = m.group(2)
    except OSError:
        return ""
    return " ".join(x for x in (flags.get("CMAKE_CXX_FLAGS", ""),
                                flags.get(f"CMAKE_CXX_FLAGS_{build_type.upper()}", "")) if x)


# Summary keys where a larger number is worse (latencies, bytes); in all others smaller is worse.
def larger_is_worse(key):
    return any(w in key for w in ("p99", "p50", "_ms", "bytes_per_entry", "_ns", "_us"))


def previous_results(json_path):
    """The newest other results file beside `json_path`, or None."""
    directory = os.path.dirname(os.path.abspath(json_path))
    mine = os.path.basename(json_path)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and n != mine and n < mine)
    except OSError:
        return None, None
    for name in reversed(names):
        doc = load_json(os.path.join(directory, name))
        if doc and isinstance(doc.get("summary"), dict):
            return name, doc
    return None, None


def regressions(now, before, threshold=0.15):
    """(key, before, now, change) for every summary number worse than `before` by more than `threshold`."""
    out = []
    for key, v in sorted(now.items()):
        b = before.get(key)
        if not isinstance(v, (int, float)) or not isinstance(b, (int, float)) or isinstance(v, bool) or b == 0:
            continue
        change = (v - b) / abs(b)
        worse = change > threshold if larger_is_worse(key) else change < -threshold
        if worse:
            out.append((key, b, v, change))
    return out


def benchmarks(doc):
    return {b["name"]: b for b in (doc or {}).get("benchmarks", []) if b.get("run_type", "iteration") == "iteration"}


def parse_memory(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                fields = dict(re.findall(r"(\w+)=\s*([\d.]+)", line))
                if "entries" in fields and "rss_bytes_per_entry" in fields:
                    rows.append({k: float(v) for k, v in fields.items()})
    except OSError:
        pass
    return rows


class Table:
    def __init__(self):
        self.rows = []

    def add(self, what, measured, target="", ok=None):
        status = "" if ok is None else ("ok" if ok else "MISS")
        self.rows.append((what, measured, target, status))

    def render(self):
        widths = [max(len(r[i]) for r in self.rows + [("what", "measured", "target", "")]) for i in range(3)]
        out = []
        header = ("what", "measured", "target", "")
        for r in [header] + self.rows:
            out.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip())
        return "\n".join(out)


def fmt_rate(v):
    if v is None:
        return "n/a"
    if v >= 1e9:
        return f"{v / 1e9:.2f} G/s"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k/s"
    return f"{v:.0f} /s"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--raw", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--stamp", default="")
    p.add_argument("--build-dir", default="")
    p.add_argument("--build-type", default="")
    p.add_argument("--quick", default="0")
    p.add_argument("--loadavg-start", default="")
    p.add_argument("--loadavg-end", default="")
    args = p.parse_args()

    raw = args.raw
    micro_doc = load_json(os.path.join(raw, "prefix_index_bench.json"))
    decoder_doc = load_json(os.path.join(raw, "event_decoder_bench.json"))
    micro = benchmarks(micro_doc)
    decoder = benchmarks(decoder_doc)
    memory = parse_memory(os.path.join(raw, "index_memory_bench.txt"))
    grpc2k = load_json(os.path.join(raw, "kvindex_bench_2048.json"))
    grpchashes = load_json(os.path.join(raw, "kvindex_bench_2048_hashes.json"))
    grpcmix = load_json(os.path.join(raw, "kvindex_bench_mix.json"))
    ingest = load_json(os.path.join(raw, "ingest_bench.json"))
    scale = load_json_lines(os.path.join(raw, "index_scale.json"))

    t = Table()
    summary = {}

    # In-process Match, 8k tokens.
    for holders, target in ((1, 30.0), (100, 60.0)):
        for hit in (50, 100):
            b = micro.get(f"BM_Match/tokens:8192/hit:{hit}/holders:{holders}")
            p99 = b.get("p99_us") if b else None
            key = f"match_8k_hit{hit}_holders{holders}_p99_us"
            summary[key] = p99
            t.add(f"in-process Match 8k tokens, {hit}% cached, {holders} holder(s): p99",
                  "n/a" if p99 is None else f"{p99:.1f} us", f"<= {target:.0f} us",
                  None if p99 is None else p99 <= target)
    # Apply (in-process ingestion, one thread = one core).
    for name, b in sorted(micro.items()):
        if name.startswith("BM_Apply") and not name.startswith("BM_ApplyParallel") and "items_per_second" in b:
            v = b["items_per_second"]
            summary[f"{name}_blocks_per_second"] = v
            t.add(f"in-process ingestion {name.removeprefix('BM_')}", fmt_rate(v), ">= 5 M/s per core", v >= 5e6)
    # Ingestion from 2 threads into one index against 1 (issue 19: >= 1.7x).
    one = micro.get("BM_ApplyParallel/real_time/threads:1", {}).get("items_per_second")
    two = micro.get("BM_ApplyParallel/real_time/threads:2", {}).get("items_per_second")
    if one and two:
        summary["ingestion_2_threads_speedup"] = two / one
        t.add("in-process ingestion, 2 threads / 1 thread (steady state, 16-block batches)",
              f"{two / one:.2f}x ({fmt_rate(one)} -> {fmt_rate(two)})", ">= 1.7x", two / one >= 1.7)
    # Decoding and hashing (no targets).
    dec = [b.get("blocks_per_second") for b in decoder.values() if b.get("blocks_per_second")]
    dec_bytes = [b.get("bytes_per_second") for b in decoder.values() if b.get("bytes_per_second")]
    if dec:
        summary["decode_blocks_per_second_min"] = min(dec)
        t.add("decoding, blocks/s (slowest..fastest case)", f"{fmt_rate(min(dec))}..{fmt_rate(max(dec))}")
    if dec_bytes:
        t.add("decoding, bytes/s (slowest..fastest case)",
              f"{min(dec_bytes) / 1e6:.0f}..{max(dec_bytes) / 1e6:.0f} MB/s")
    for name, b in sorted(micro.items()):
        if name.startswith("BM_Hash") and "items_per_second" in b:
            summary["hash_tokens_per_second"] = b["items_per_second"]
            t.add(f"hashing ({name.removeprefix('BM_')}), tokens/s", fmt_rate(b["items_per_second"]))
    # Memory.
    for row in memory:
        v = row["rss_bytes_per_entry"]
        entries = int(row["entries"])
        holders = int(row.get("holders", 0))
        summary[f"memory_{entries}_holders{holders}_bytes_per_entry"] = v
        t.add(f"memory per (block, worker) entry, {entries / 1e6:g}M entries, {holders} holder(s)",
              f"{v:.1f} B RSS ({row.get('rss_trimmed_bytes_per_entry', 0):.1f} trimmed)", "<= 40 B", v <= 40)
    # The index at growing sizes (issue 19's targets).
    smallest = scale[0] if scale else None
    for row in scale:
        n = f"{row['entries'] / 1e6:.3g}M entries"
        key = f"scale_{row['entries']}"
        summary[f"{key}_bytes_per_entry"] = row["rss_bytes_per_entry"]
        summary[f"{key}_fill_blocks_per_second"] = row["fill_blocks_per_s"]
        t.add(f"index at {n}: bytes per entry (1 holder)",
              f"{row['rss_bytes_per_entry']:.1f} B ({row['rss_trimmed_bytes_per_entry']:.1f} trimmed)", "<= 24 B",
              row["rss_bytes_per_entry"] <= 24)
        t.add(f"index at {n}: ingestion while filling (last tenth)",
              f"{fmt_rate(row['fill_blocks_per_s'])} ({fmt_rate(row['fill_last_tenth_blocks_per_s'])})",
              ">= 4.5 M/s per core", row["fill_blocks_per_s"] >= 4.5e6)
        if "batch_store_us" in row:  # (results before 2026-12-07 lack it)
            p99, p999, longest = row["batch_store_us"]
            summary[f"{key}_batch_store_max_us"] = longest
            t.add(f"index at {n}: a 256-block store while filling, p99/p99.9/max",
                  f"{p99 / 1e3:.1f}/{p999 / 1e3:.1f}/{longest / 1e3:.1f} ms", "no stop of milliseconds",
                  longest <= 1000)
        for case, label, target in (("match_hot_1", "8k half cached, 1 worker", 5.0),
                                    ("match_hot_1_hashes", "8k half cached by hashes, 1 worker", 2.0),
                                    ("match_hot_100", "8k half cached, 100 workers", 10.0),
                                    ("match_cold_1", "8k half cached, cold chains, 1 worker", None)):
            p50, p99 = row[case]
            summary[f"{key}_{case}_p99_us"] = p99
            if target is None:
                base = smallest[case][1]
                t.add(f"index at {n}: Match {label}: p50/p99", f"{p50:.1f}/{p99:.1f} us",
                      f"p99 <= 2x at {smallest['entries'] / 1e6:.3g}M", p99 <= 2 * base)
            else:
                t.add(f"index at {n}: Match {label}: p50/p99", f"{p50:.1f}/{p99:.1f} us", f"p99 <= {target:g} us",
                      p99 <= target)
    # gRPC.
    if grpc2k:
        ratio = grpc2k.get("match_to_health")
        summary["grpc_match2k_to_health"] = ratio
        t.add("gRPC Match 2k tokens / empty RPC throughput, same run",
              "n/a" if ratio is None else f"{ratio:.2f}", ">= 0.80", None if ratio is None else ratio >= 0.8)
        for phase, label in (("match", "gRPC Match 2k tokens"), ("health", "gRPC empty RPC (health Check)")):
            ph = grpc2k.get(phase)
            if ph:
                l = ph["latency"]
                srv = ph.get("server_cpu_us_per_call")
                t.add(f"{label}: rps, p50/p99",
                      f"{ph['rps']:.0f} rps, {l['p50_us']:.0f}/{l['p99_us']:.0f} us"
                      + (f", server {srv:.0f} us CPU/call" if srv is not None else ""),
                      f"concurrency {grpc2k['config']['concurrency']}")
        summary["grpc_match2k_rps"] = (grpc2k.get("match") or {}).get("rps")
        summary["grpc_health_rps"] = (grpc2k.get("health") or {}).get("rps")
        if grpc2k.get("match"):
            t.add("gRPC Match 2k tokens: hits", f"{100 * grpc2k['match'].get('hit_ratio', 0):.0f}% of calls, "
                  f"{grpc2k['match'].get('pods_per_hit', 0):.1f} pods")
    if grpchashes and grpchashes.get("match"):
        m = grpchashes["match"]
        ratio = grpchashes.get("match_to_health")
        summary["grpc_match2k_hashes_to_health"] = ratio
        srv = m.get("server_cpu_us_per_call")
        t.add("gRPC Match 2k tokens sent as 128 block hashes / empty RPC",
              "n/a" if ratio is None else f"{ratio:.2f}", ">= 0.80 (tokens are the target)")
        t.add("gRPC Match 2k by hashes: rps, p50/p99",
              f"{m['rps']:.0f} rps, {m['latency']['p50_us']:.0f}/{m['latency']['p99_us']:.0f} us"
              + (f", server {srv:.0f} us CPU/call" if srv is not None else ""))
    if grpcmix and grpcmix.get("match"):
        m = grpcmix["match"]
        mix = ",".join(f"{e['tokens']}:{e['weight']:g}" for e in grpcmix["config"]["prompt_mix"])
        t.add(f"gRPC Match mix {mix}: rps, p50/p99",
              f"{m['rps']:.0f} rps, {m['latency']['p50_us']:.0f}/{m['latency']['p99_us']:.0f} us",
              f"ratio {grpcmix.get('match_to_health', 0):.2f}")
        summary["grpc_mix_rps"] = m["rps"]
    # Ingestion end to end.
    if ingest and ingest.get("ramp"):
        r = ingest["ramp"]
        v = r.get("max_sustained_blocks_per_second")
        summary["e2e_ingest_max_sustained_blocks_per_second"] = v
        summary["e2e_ingest_peak_applied_blocks_per_second"] = r.get("peak_applied_blocks_per_second")
        t.add("end-to-end ingestion over ZeroMQ, max sustained", fmt_rate(v), ">= 1 M/s", v >= 1e6)
        t.add("end-to-end ingestion, peak applied (backlogged)", fmt_rate(r.get("peak_applied_blocks_per_second")))
    if ingest and ingest.get("lag"):
        lag = ingest["lag"]
        p99 = lag["lag_upper"]["p99_us"] / 1e3
        summary["e2e_lag_p99_ms"] = p99
        summary["e2e_lag_p50_ms"] = lag["lag_upper"]["p50_us"] / 1e3
        server_lag = lag.get("server_lag")
        if server_lag:
            # Exact per batch (ts -> applied), every pod's batches; interpolated within buckets.
            summary["e2e_server_lag_p99_ms"] = server_lag["p99_ms"]
            summary["e2e_server_lag_within_1ms"] = server_lag["within_1ms"]
            state = ("steady index" if lag.get("index_filled")
                     else "index still growing" if "index_filled" not in lag else "index fill timed out")
            t.add(f"event lag p99 at {fmt_rate(lag['applied_blocks_per_second'])} blocks applied (server, all batches, {state})",
                  f"{server_lag['p99_ms']:.2f} ms", "<= 1 ms", server_lag["within_1ms"] >= 0.99)
            t.add("event lag at the server: p50, share <= 1 ms",
                  f"{server_lag['p50_ms']:.2f} ms, {100 * server_lag['within_1ms']:.2f} %",
                  f"{server_lag['batches']} batches")
        t.add("event lag p99, probe pod (upper bound: first seeing Match reply)",
              f"{p99:.2f} ms", "<= 1 ms", None if server_lag else p99 <= 1.0)
        t.add("event lag p50 (upper) / p99 (lower bound) / poll resolution p50",
              f"{lag['lag_upper']['p50_us'] / 1e3:.2f} / {lag['lag_lower']['p99_us'] / 1e3:.2f} ms / "
              f"{lag['poll_rtt']['p50_us']:.0f} us", f"{lag['visible']} probes, {lag['lost']} lost")

    machine = machine_info(args)
    doc = {
        "machine": machine,
        "summary": summary,
        "raw": {
            "prefix_index_bench": micro_doc,
            "event_decoder_bench": decoder_doc,
            "index_memory_bench": memory,
            "index_scale_bench": scale,
            "kvindex_bench_2048": grpc2k,
            "kvindex_bench_2048_hashes": grpchashes,
            "kvindex_bench_mix": grpcmix,
            "ingest_bench": ingest,
        },
    }
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    print(f"machine: {machine['nproc']} x {machine['cpu_model']}, {machine['mem_total_gib']} GiB, "
          f"{machine['kernel']}; {machine['compiler']}")
    print(f"build: {machine['build_dir']} ({machine['build_type']}: {machine['compile_flags'] or 'flags unknown'}), "
          f"commit {machine['git_commit'][:12]}"
          f"{' (dirty tree)' if machine['git_dirty'] else ''}{'; QUICK run' if machine['quick'] else ''}")
    print(f"load average: {machine['loadavg_start']} at start, {machine['loadavg_end']} at end "
          f"(2 shared cores: other work on the machine shows in every number)")
    print()
    print(t.render())

    name, before = previous_results(args.json)
    if before is None:
        print("\nno previous results file to compare with")
        return
    prev = before.get("machine", {})
    print(f"\ncompared with {name} (commit {str(prev.get('git_commit', ''))[:12]}, "
          f"{prev.get('build_type', '?')}: {prev.get('compile_flags') or 'flags unknown'}):")
    if prev.get("build_type") != machine["build_type"] or prev.get("compile_flags") != machine["compile_flags"]:
        print("  NOTE: another build type or other flags; differences may be the compiler's")
    worse = regressions(summary, before["summary"])
    if not worse:
        print("  no row more than 15 % worse")
    for key, b, v, change in worse:
        print(f"  REGRESSION {key}: {b:.4g} -> {v:.4g} ({change:+.0%})")


if __name__ == "__main__":
    main()
