// The index at growing sizes (issue 19, "Scale"): for each size, an empty
// PrefixIndex is filled to that many (block, worker) entries (one holder each,
// spread over 100 workers), and the run prints
//  - ingestion while filling: stored blocks/s over the whole fill and over its
//    last tenth (the index at about that size; table growth included);
//  - memory: RSS growth per entry, before and after malloc_trim;
//  - Match p50/p99 of an 8k-token prompt whose first half is cached: the same
//    hot prompt each call (on 1 worker, by tokens and by block hashes; on all
//    100 workers), and "cold": each call a different stored chain, so its
//    blocks are scattered over the tables and mostly not in any CPU cache.
//
//   build/bin/index_scale_bench [--entries=1000000,10000000,100000000] [--json_file=F]
//
// 100M entries take ~6 GB and a few minutes. --json_file gets one JSON object
// per size, one per line (scripts/lib/plot_scale.py draws them).

#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "bench/corpus.h"
#include "core/index/block_hash.h"
#include "core/index/prefix_index.h"
#include "core/util/resident_memory.h"

ABSL_FLAG(std::vector<std::string>, entries, std::vector<std::string>({"1000000", "10000000", "100000000"}),
          "index sizes in (block, worker) entries, one run each");
ABSL_FLAG(int, match_calls, 20000, "Match calls timed per case");
ABSL_FLAG(std::string, json_file, "", "appends one JSON line per size");

namespace kvindex {
namespace {

using bench::kBlockSize;
using Clock = std::chrono::steady_clock;

constexpr int kWorkers = 100;
constexpr size_t kChainBlocks = 256;  // 4,096 tokens: half of an 8k prompt
constexpr size_t kColdChains = 4096;  // chains kept (spread over the fill) for cold Matches


double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Latency {
  double p50_us = 0;
  double p99_us = 0;
};

// Times `calls` Matches, query i being queries[i % size]; checks each matched
// `expect_blocks` on `expect_workers` workers (a wrong answer is not a result).
Latency TimeMatches(const PrefixIndex& index, const std::vector<MatchQuery>& queries, int calls,
                    uint32_t expect_blocks, size_t expect_workers, const char* name) {
  std::vector<double> ns;
  ns.reserve(calls);
  size_t wrong = 0;
  for (int i = 0; i < calls; ++i) {
    const auto t0 = Clock::now();
    absl::StatusOr<MatchResult> r = index.Match(queries[i % queries.size()]);
    const auto t1 = Clock::now();
    ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    if (!r.ok() || r->workers.size() != expect_workers ||
        (expect_workers > 0 && r->workers[0].matched_blocks != expect_blocks)) {
      ++wrong;
    }
  }
  if (wrong > 0) std::fprintf(stderr, "index_scale_bench: %s: %zu of %d answers wrong\n", name, wrong, calls);
  return {bench::Quantile(ns, 0.50) / 1e3, bench::Quantile(ns, 0.99) / 1e3};
}

// The 8k prompt of `cached` (a stored 4,096-token chain) and 4,096 tokens nobody holds.
std::vector<uint32_t> HalfCached(const std::vector<uint32_t>& cached, std::mt19937_64& rng) {
  std::vector<uint32_t> prompt = cached;
  for (size_t i = 0; i < kChainBlocks * kBlockSize; ++i) prompt.push_back(200000 + static_cast<uint32_t>(rng() % 1000));
  return prompt;
}

void Run(size_t entries, int match_calls, std::FILE* json) {
  malloc_trim(0);
  const size_t rss0 = ResidentBytes();
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
  std::mt19937_64 rng(entries);

  // Fill: chains of 256 blocks, chain c on worker c % 100.
  const size_t chains = std::max<size_t>(1, entries / kChainBlocks);
  const size_t keep_every = std::max<size_t>(1, chains / kColdChains);
  const size_t last_tenth = chains - chains / 10;
  std::vector<std::vector<uint32_t>> kept;
  Clock::duration fill{}, fill_last{};
  std::vector<double> batch_us;  // each chain's store: a worker's pause when a table grows in it
  batch_us.reserve(chains);
  for (size_t c = 0; c < chains; ++c) {
    std::vector<uint32_t> tokens = bench::RandomTokens(rng, kChainBlocks * kBlockSize);
    const auto t0 = Clock::now();
    bench::StoreChain(index, bench::BenchWorker(static_cast<int>(c % kWorkers)), tokens, rng);
    const Clock::duration took = Clock::now() - t0;
    fill += took;
    batch_us.push_back(std::chrono::duration<double, std::micro>(took).count());
    if (c >= last_tenth) fill_last += took;
    if (c % keep_every == 0 && kept.size() < kColdChains) kept.push_back(std::move(tokens));
  }
  const IndexStats filled = index.Stats();
  const size_t rss1 = ResidentBytes();
  malloc_trim(0);
  const size_t rss_trimmed = ResidentBytes();
  const size_t kept_bytes = kept.size() * kChainBlocks * kBlockSize * sizeof(uint32_t);  // not the index's
  const double per_entry = double(rss1 - rss0 - kept_bytes) / filled.entries;
  const double per_entry_trimmed = double(rss_trimmed - rss0 - kept_bytes) / filled.entries;
  const double fill_rate = double(chains * kChainBlocks) / Seconds(fill);
  const double fill_rate_last = double((chains - last_tenth) * kChainBlocks) / Seconds(fill_last);
  const double batch_p99 = bench::Quantile(batch_us, 0.99);
  const double batch_p999 = bench::Quantile(batch_us, 0.999);
  const double batch_max = batch_us.empty() ? 0 : batch_us.back();  // (sorted by Quantile)

  // The hot prompts: one chain on worker 0, another on every worker.
  const std::vector<uint32_t> hot_one = bench::RandomTokens(rng, kChainBlocks * kBlockSize);
  const std::vector<uint32_t> hot_all = bench::RandomTokens(rng, kChainBlocks * kBlockSize);
  bench::StoreChain(index, bench::BenchWorker(0), hot_one, rng);
  for (int w = 0; w < kWorkers; ++w) bench::StoreChain(index, bench::BenchWorker(w), hot_all, rng);
  const std::vector<uint32_t> prompt_one = HalfCached(hot_one, rng);
  const std::vector<uint32_t> prompt_all = HalfCached(hot_all, rng);
  const std::vector<uint64_t> hashes_one =
      HashPrefix(ContextSeed(bench::kModel, "", kBlockSize), prompt_one, kBlockSize);
  std::vector<std::vector<uint32_t>> cold_prompts;
  for (const auto& chain : kept) cold_prompts.push_back(HalfCached(chain, rng));
  std::shuffle(cold_prompts.begin(), cold_prompts.end(), rng);

  auto by_tokens = [](const std::vector<uint32_t>& prompt) {
    return MatchQuery{.model = bench::kModel, .token_ids = prompt};
  };
  std::vector<MatchQuery> cold;
  for (const auto& p : cold_prompts) cold.push_back(by_tokens(p));
  const Latency one = TimeMatches(index, {by_tokens(prompt_one)}, match_calls, kChainBlocks, 1, "hot, 1 worker");
  const Latency one_hashes = TimeMatches(index, {MatchQuery{.model = bench::kModel, .block_hashes = hashes_one}},
                                         match_calls, kChainBlocks, 1, "hot by hashes, 1 worker");
  const Latency all = TimeMatches(index, {by_tokens(prompt_all)}, match_calls, kChainBlocks, kWorkers,
                                  "hot, 100 workers");
  const Latency scattered = TimeMatches(index, cold, match_calls, kChainBlocks, 1, "cold, 1 worker");

  std::printf(
      "entries=%-10zu fill=%5.2fM blocks/s (last tenth %5.2fM)  rss_bytes_per_entry=%5.1f (trimmed %5.1f)\n"
      "  a 256-block batch's store p99/p99.9/max us: %.0f / %.0f / %.0f\n"
      "  Match 8k half cached p50/p99 us: hot 1 worker %6.2f / %6.2f | by hashes %6.2f / %6.2f | "
      "hot 100 workers %6.2f / %6.2f | cold 1 worker %6.2f / %6.2f\n",
      static_cast<size_t>(filled.entries), fill_rate / 1e6, fill_rate_last / 1e6, per_entry, per_entry_trimmed,
      batch_p99, batch_p999, batch_max, one.p50_us, one.p99_us, one_hashes.p50_us, one_hashes.p99_us, all.p50_us,
      all.p99_us, scattered.p50_us, scattered.p99_us);
  std::fflush(stdout);
  if (json != nullptr) {
    std::fprintf(json,
                 "{\"entries\": %zu, \"fill_blocks_per_s\": %.0f, \"fill_last_tenth_blocks_per_s\": %.0f, "
                 "\"rss_bytes_per_entry\": %.2f, \"rss_trimmed_bytes_per_entry\": %.2f, "
                 "\"batch_store_us\": [%.1f, %.1f, %.1f], "
                 "\"match_hot_1\": [%.3f, %.3f], \"match_hot_1_hashes\": [%.3f, %.3f], "
                 "\"match_hot_100\": [%.3f, %.3f], \"match_cold_1\": [%.3f, %.3f]}\n",
                 static_cast<size_t>(filled.entries), fill_rate, fill_rate_last, per_entry, per_entry_trimmed,
                 batch_p99, batch_p999, batch_max, one.p50_us, one.p99_us, one_hashes.p50_us, one_hashes.p99_us,
                 all.p50_us, all.p99_us, scattered.p50_us, scattered.p99_us);
    std::fflush(json);
  }
}

}  // namespace
}  // namespace kvindex

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);  // as kvindex-server does
  std::FILE* json = nullptr;
  if (const std::string path = absl::GetFlag(FLAGS_json_file); !path.empty()) {
    json = std::fopen(path.c_str(), "a");
    if (json == nullptr) {
      std::fprintf(stderr, "index_scale_bench: cannot open %s\n", path.c_str());
      return 2;
    }
  }
  for (const std::string& e : absl::GetFlag(FLAGS_entries)) {
    size_t entries;
    if (!absl::SimpleAtoi(e, &entries) || entries < kvindex::kChainBlocks) {
      std::fprintf(stderr, "bad --entries value %s (at least 256)\n", e.c_str());
      return 2;
    }
    kvindex::Run(entries, absl::GetFlag(FLAGS_match_calls), json);
  }
  if (json != nullptr) std::fclose(json);
  return 0;
}
