#!/usr/bin/env python3
"""Draws index_scale_bench's results (one JSON object per index size, one per line) as an SVG:
Match latency and bytes per entry against the index's size.

    python3 scripts/lib/plot_scale.py --json bench-results/STAMP/index_scale.json --out scale.svg
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")  # no display
import matplotlib.pyplot as plt  # noqa: E402

CASES = [
    ("match_hot_1", "hot, 1 worker"),
    ("match_hot_1_hashes", "hot by block hashes, 1 worker"),
    ("match_hot_100", "hot, 100 workers"),
    ("match_cold_1", "cold (a new chain each call), 1 worker"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", required=True, help="index_scale_bench --json_file output")
    parser.add_argument("--out", required=True, help="the SVG (or PNG) to write")
    parser.add_argument("--title", default="", help="a line under the title (build, commit, date)")
    args = parser.parse_args()
    with open(args.json) as f:
        rows = sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["entries"])
    if not rows:
        raise SystemExit(f"plot_scale.py: no results in {args.json}")
    sizes = [r["entries"] for r in rows]

    fig, (latency, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in CASES:
        line, = latency.plot(sizes, [r[key][1] for r in rows], marker="o", label=label)
        latency.plot(sizes, [r[key][0] for r in rows], marker=".", linestyle="--", color=line.get_color())
    latency.set_xscale("log")
    latency.set_yscale("log")
    latency.set_xlabel("index size, (block, worker) entries")
    latency.set_ylabel("Match, 8k tokens half cached (µs)\nsolid p99, dashed p50")
    latency.grid(True, which="both", alpha=0.3)
    latency.set_ylim(top=max(r[key][1] for r in rows for key, _ in CASES) * 12)  # room for the legend
    latency.legend(fontsize=7, loc="upper left")

    memory.plot(sizes, [r["rss_bytes_per_entry"] for r in rows], marker="o", label="RSS growth per entry")
    memory.plot(sizes, [r["rss_trimmed_bytes_per_entry"] for r in rows], marker=".", linestyle="--",
                label="after malloc_trim")
    memory.axhline(24, color="grey", linestyle=":", label="target: 24 B")
    memory.set_xscale("log")
    memory.set_ylim(bottom=0)
    memory.set_xlabel("index size, (block, worker) entries")
    memory.set_ylabel("bytes per entry (one holder)")
    memory.grid(True, which="both", alpha=0.3)
    memory.legend(fontsize=7)

    fig.suptitle("kvindex: the index at growing sizes (index_scale_bench)" +
                 (f"\n{args.title}" if args.title else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
