// Snapshots of a large index (issue 17): what a write costs ingestion (the
// longest time one worker's Apply waits for its copy), how long a write and a
// load take, the file's size, and the peak memory of each.
//
//   build/bin/snapshot_bench --mode=write --dir=D [--workers=100] [--blocks_per_worker=100000]
//   build/bin/snapshot_bench --mode=load --dir=D
//
// write: indexes workers x blocks_per_worker entries (chains of 64 blocks of
// 16 tokens, every fourth block also on CPU), then writes D/kvindex.snapshot
// three times while a thread keeps applying batches to every worker, and
// prints each write's time, the longest per-worker pause and the longest
// Apply seen meanwhile. load: loads it into a fresh index (its own process,
// so the peak memory is the load's). Peak memory is VmHWM. Numbers are
// printed, never judged (BENCHMARKS.md).

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "core/index/prefix_index.h"
#include "core/snapshot/index_snapshot.h"

ABSL_FLAG(std::string, mode, "write", "write or load");
ABSL_FLAG(std::string, dir, "/tmp", "snapshot directory (must exist)");
ABSL_FLAG(int, workers, 100, "workers (write)");
ABSL_FLAG(int, blocks_per_worker, 100000, "entries per worker (write)");

namespace kvindex {
namespace {

constexpr uint32_t kBlockSize = 16;
constexpr size_t kChain = 64;

// Peak resident set size, MiB.
double PeakMiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

Pod PodOf(int w) {
  Pod pod;
  pod.ns = "bench";
  pod.name = "p" + std::to_string(w);
  pod.ip = "10.0.0.1";
  pod.phase = "Running";
  pod.model = "bench-model";
  pod.kv_events_enabled = true;
  return pod;
}

EventBatch Chain(uint64_t salt, size_t first_block, bool cpu) {
  EventBatch batch;
  BlockStored s;
  s.block_size = kBlockSize;
  s.medium = cpu ? std::optional<std::string>("CPU") : std::nullopt;
  for (size_t i = 0; i < kChain; ++i) {
    s.block_hashes.push_back(salt * 1000000007ULL + first_block + i + 1);
    for (uint32_t t = 0; t < kBlockSize; ++t) s.token_ids.push_back(static_cast<uint32_t>((first_block + i) * 31 + t));
  }
  batch.events.push_back(std::move(s));
  return batch;
}

int Write(const std::string& dir, int workers, int per_worker) {
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
  const WorkerContext context{"bench-model", ""};
  std::vector<Pod> pods;
  const absl::Time built_at = absl::Now();
  uint64_t seq = 0;
  for (int w = 0; w < workers; ++w) {
    pods.push_back(PodOf(w));
    const WorkerKey key{"bench/p" + std::to_string(w), 0};
    for (size_t b = 0; b < static_cast<size_t>(per_worker); b += kChain) {
      (void)index.Apply(key, context, Chain(w, b, false), BatchCursor{seq++, 1, true});
      if ((b / kChain) % 4 == 0) (void)index.Apply(key, context, Chain(w, b, true), BatchCursor{seq++, 1, true});
    }
  }
  std::printf("indexed %llu entries (%d workers x %d) in %s; index %.0f MiB\n",
              static_cast<unsigned long long>(index.Stats().entries), workers, per_worker,
              absl::FormatDuration(absl::Now() - built_at).c_str(), index.Stats().memory_bytes / 1048576.0);
  // Ingestion meanwhile: one thread re-storing a CPU chain on every worker in
  // turn, timing each Apply (the pause a snapshot's copy can add is inside).
  std::atomic<bool> stop{false};
  std::atomic<int64_t> longest_apply_ns{0};
  std::atomic<uint64_t> applies{0};
  std::thread ingest([&] {
    const WorkerContext ctx{"bench-model", ""};
    for (uint64_t i = 0; !stop.load(); ++i) {
      const int w = static_cast<int>(i % workers);
      EventBatch batch = Chain(w, 0, true);
      const auto t0 = std::chrono::steady_clock::now();
      (void)index.Apply(WorkerKey{"bench/p" + std::to_string(w), 0}, ctx, batch, BatchCursor{1u << 30, 2, true});
      const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
      int64_t seen = longest_apply_ns.load();
      while (ns > seen && !longest_apply_ns.compare_exchange_weak(seen, ns)) {
      }
      applies.fetch_add(1);
    }
  });
  absl::SleepFor(absl::Milliseconds(200));
  const int64_t before = longest_apply_ns.exchange(0);
  std::printf("longest Apply before writing: %.3f ms\n", before / 1e6);
  for (int run = 0; run < 3; ++run) {
    const uint64_t applies0 = applies.load();
    absl::StatusOr<SnapshotWriteStats> stats = WriteIndexSnapshot(index, pods, {.dir = dir});
    if (!stats.ok()) {
      std::fprintf(stderr, "write failed: %s\n", stats.status().ToString().c_str());
      stop = true;
      ingest.join();
      return 1;
    }
    std::printf(
        "write %d: %llu entries, %.1f MiB in %s (%.1f M entries/s); longest pause of one worker %s; longest Apply "
        "meanwhile %.3f ms over %llu applies; peak RSS %.0f MiB\n",
        run, static_cast<unsigned long long>(stats->entries), stats->bytes / 1048576.0,
        absl::FormatDuration(stats->duration).c_str(), stats->entries / absl::ToDoubleSeconds(stats->duration) / 1e6,
        absl::FormatDuration(stats->longest_pause).c_str(), longest_apply_ns.exchange(0) / 1e6,
        static_cast<unsigned long long>(applies.load() - applies0), PeakMiB());
  }
  stop = true;
  ingest.join();
  return 0;
}

int Load(const std::string& dir) {
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
  const double before = PeakMiB();
  SnapshotLoad load = LoadIndexSnapshot(dir, "", &index);
  if (load.outcome != SnapshotLoadOutcome::kLoaded) {
    std::fprintf(stderr, "load: %s %s\n", std::string(SnapshotLoadOutcomeName(load.outcome)).c_str(),
                 load.status.ToString().c_str());
    return 1;
  }
  std::printf("load: %llu workers, %llu entries, %.1f MiB in %s (%.1f M entries/s); peak RSS %.0f MiB (%.0f before); "
              "index %.0f MiB\n",
              static_cast<unsigned long long>(load.workers), static_cast<unsigned long long>(load.entries),
              load.bytes / 1048576.0, absl::FormatDuration(load.duration).c_str(),
              load.entries / absl::ToDoubleSeconds(load.duration) / 1e6, PeakMiB(), before,
              index.Stats().memory_bytes / 1048576.0);
  return 0;
}

}  // namespace
}  // namespace kvindex

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_dir);
  if (absl::GetFlag(FLAGS_mode) == "load") return kvindex::Load(dir);
  return kvindex::Write(dir, absl::GetFlag(FLAGS_workers), absl::GetFlag(FLAGS_blocks_per_worker));
}
