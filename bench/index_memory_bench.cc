// Bytes per (block, worker) entry of a PrefixIndex, measured from the process:
// the growth of its resident set size while indexing, divided by entries, as
// it is and after malloc_trim (which gives back the free pages of the heap;
// the tables themselves are mappings of their own, see core/index/internal/table_memory.h).
// Prints the index's own estimate beside them.
//
//   build/bin/index_memory_bench [--entries=1000000,10000000] [--holders=1,10,100]
//
// "holders" is how many of the 100 workers hold each block (1: every block is
// some worker's own; 100: every block is cached everywhere, like system prompts).
//
// With --speculative_entries, the same for speculative entries (README
// "Routing hints"): RecordRouting hints of 64 block hashes each, every hint to
// `holders` workers, no engine block at all; once with a deadline (a hint with
// a TTL: also in the table's deadline order) and once without (a pod without
// KV events). --entries= (empty) skips the engine-block runs.
//
//   build/bin/index_memory_bench --entries= --speculative_entries=1000000 --holders=1,10

#include <malloc.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/util/resident_memory.h"

ABSL_FLAG(std::vector<std::string>, entries, std::vector<std::string>({"1000000", "10000000"}),
          "(block, worker) entries to index, one run each");
ABSL_FLAG(std::vector<std::string>, holders, std::vector<std::string>({"1", "10", "100"}),
          "workers holding each block, one run each");
ABSL_FLAG(std::vector<std::string>, speculative_entries, {},
          "(block, worker) speculative entries to record, one run each (with and without a deadline)");

namespace kvindex {
namespace {

constexpr int kWorkers = 100;
constexpr uint32_t kBlockSize = 16;
constexpr size_t kBlocksPerEvent = 64;

void Run(size_t entries, int holders) {
  malloc_trim(0);
  const size_t rss0 = ResidentBytes();
  {
    PrefixIndex index(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
    std::mt19937_64 rng(entries + holders);
    const size_t blocks = entries / holders;
    const WorkerContext context{"mem-model", ""};
    // Chains of 64 blocks; chain c is held by workers c, c+1, ... (mod 100).
    EventBatch batch;
    batch.events.emplace_back(BlockStored{});
    BlockStored& s = std::get<BlockStored>(batch.events[0]);
    s.block_size = kBlockSize;
    for (size_t c = 0; c * kBlocksPerEvent < blocks; ++c) {
      const size_t n = std::min(kBlocksPerEvent, blocks - c * kBlocksPerEvent);
      s.token_ids.resize(n * kBlockSize);
      for (auto& t : s.token_ids) t = static_cast<uint32_t>(rng());
      s.block_hashes.resize(n);
      for (int h = 0; h < holders; ++h) {
        for (auto& e : s.block_hashes) e = rng();
        (void)index.Apply({"mem/pod-" + std::to_string((c + h) % kWorkers), 0}, context, batch);
      }
    }
    batch = {};
    const IndexStats stats = index.Stats();
    const size_t rss1 = ResidentBytes();
    malloc_trim(0);  // gives back the free pages the tables' growth left in the heap
    const size_t rss_trimmed = ResidentBytes();
    std::printf("entries=%-9zu holders=%-3d rss_bytes_per_entry=%6.1f "
                "rss_trimmed_bytes_per_entry=%6.1f estimate_bytes_per_entry=%6.1f (blocks=%zu workers=%zu)\n",
                static_cast<size_t>(stats.entries), holders, double(rss1 - rss0) / stats.entries, double(rss_trimmed - rss0) / stats.entries,
                double(stats.memory_bytes) / stats.entries,
                static_cast<size_t>(stats.blocks), static_cast<size_t>(stats.workers));
    std::fflush(stdout);
  }
}

// Speculative entries only: hints of kBlocksPerEvent random index hashes, each
// to `holders` workers in turn, with a 10-minute TTL (`deadline`) or none.
void RunSpeculative(size_t entries, int holders, bool deadline) {
  malloc_trim(0);
  const size_t rss0 = ResidentBytes();
  {
    IndexOptions options{.max_blocks_per_worker = 0, .max_entries = 0};
    options.speculative.max_entries = 0;
    PrefixIndex index(options);
    std::mt19937_64 rng(entries + holders);
    const size_t blocks = entries / holders;
    std::vector<uint64_t> hashes;
    for (size_t c = 0; c * kBlocksPerEvent < blocks; ++c) {
      hashes.resize(std::min(kBlocksPerEvent, blocks - c * kBlocksPerEvent));
      for (uint64_t& x : hashes) x = rng();
      for (int h = 0; h < holders; ++h) {
        RoutingHint hint;
        hint.worker = {"mem/pod-" + std::to_string((c + h) % kWorkers), 0};
        hint.model = "mem-model";
        hint.block_hashes = hashes;
        hint.ttl = deadline ? absl::Minutes(10) : absl::InfiniteDuration();
        (void)index.RecordRouting(hint);
      }
    }
    hashes = {};
    const SpeculativeStats stats = index.GetSpeculativeStats();
    const size_t rss1 = ResidentBytes();
    malloc_trim(0);
    const size_t rss_trimmed = ResidentBytes();
    std::printf("speculative_entries=%-9zu holders=%-3d deadline=%-3s rss_bytes_per_entry=%6.1f "
                "rss_trimmed_bytes_per_entry=%6.1f\n",
                static_cast<size_t>(stats.entries), holders, deadline ? "yes" : "no",
                double(rss1 - rss0) / stats.entries, double(rss_trimmed - rss0) / stats.entries);
    std::fflush(stdout);
  }
}

}  // namespace
}  // namespace kvindex

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  for (const std::string& e : absl::GetFlag(FLAGS_entries)) {
    for (const std::string& h : absl::GetFlag(FLAGS_holders)) {
      size_t entries;
      int holders;
      if (!absl::SimpleAtoi(e, &entries) || !absl::SimpleAtoi(h, &holders) || holders < 1 || holders > 100) {
        std::fprintf(stderr, "bad --entries or --holders value\n");
        return 2;
      }
      kvindex::Run(entries, holders);
    }
  }
  for (const std::string& e : absl::GetFlag(FLAGS_speculative_entries)) {
    for (const std::string& h : absl::GetFlag(FLAGS_holders)) {
      size_t entries;
      int holders;
      if (!absl::SimpleAtoi(e, &entries) || !absl::SimpleAtoi(h, &holders) || holders < 1 || holders > 100) {
        std::fprintf(stderr, "bad --speculative_entries or --holders value\n");
        return 2;
      }
      for (bool deadline : {true, false}) kvindex::RunSpeculative(entries, holders, deadline);
    }
  }
  return 0;
}
