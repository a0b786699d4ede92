// Micro-benchmarks of the in-process hot paths (Match, Apply, hashing) and of
// what the hardware allows a Match (BM_Floor*: hashing, table reads, locks).
// Index under test: 1M (block, worker) entries spread over 100 workers, plus a
// 32k-token "hot" prefix held by 1 or by all 100 workers.
//
//   build/bin/prefix_index_bench --benchmark_filter=Match
//
// Match reports p50/p99 latency counters (per-iteration wall time) beside the mean.

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bench/corpus.h"
#include "benchmark/benchmark.h"
#include "core/index/block_hash.h"
#include "core/index/prefix_index.h"

namespace kvindex {
namespace {

using bench::kBlockSize;
using bench::RandomTokens;
using bench::StoreChain;

constexpr int kWorkers = 100;
constexpr int kBackgroundBlocksPerWorker = 10'000;  // 1M entries in all
constexpr int kHotTokens = 32 * 1024;

struct Corpus {
  PrefixIndex index{IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0}};
  std::vector<uint32_t> hot;  // the shared prefix
  std::vector<std::vector<uint32_t>> background;  // every 5th background chain's tokens
};

// One corpus per number of hot-prefix holders, built on first use.
const Corpus& CorpusWithHolders(int holders) {
  static std::map<int, std::unique_ptr<Corpus>> corpora;
  auto& c = corpora[holders];
  if (c == nullptr) {
    c = std::make_unique<Corpus>();
    std::mt19937_64 rng(holders);
    for (int w = 0; w < kWorkers; ++w) {
      const WorkerKey key = bench::BenchWorker(w);
      for (int chain = 0; chain < kBackgroundBlocksPerWorker / 100; ++chain) {
        std::vector<uint32_t> tokens = RandomTokens(rng, 100 * kBlockSize);
        StoreChain(c->index, key, tokens, rng);
        if (chain % 5 == 0) c->background.push_back(std::move(tokens));
      }
    }
    c->hot = RandomTokens(rng, kHotTokens);
    for (int w = 0; w < holders; ++w) StoreChain(c->index, bench::BenchWorker(w), c->hot, rng);
  }
  return *c;
}

void ReportPercentiles(benchmark::State& state, std::vector<double>& ns) {
  if (ns.empty()) return;
  state.counters["p50_us"] = bench::Quantile(ns, 0.50) / 1e3;
  state.counters["p99_us"] = bench::Quantile(ns, 0.99) / 1e3;
}

// The hot prefix's first `tokens`, of which only the first `hit` percent
// (whole blocks) stay cached: the rest is replaced by tokens nobody holds.
std::vector<uint32_t> PartlyCachedPrompt(const Corpus& corpus, size_t tokens, int hit) {
  std::mt19937_64 rng(7);
  std::vector<uint32_t> prompt(corpus.hot.begin(), corpus.hot.begin() + tokens);
  const size_t cached = tokens * hit / 100 / kBlockSize * kBlockSize;
  for (size_t i = cached; i < tokens; ++i) prompt[i] = 200000 + static_cast<uint32_t>(rng() % 1000);
  return prompt;
}

// Times each iteration's Match of `query` and reports the workers named and
// the p50/p99 of the calls.
void TimeMatch(benchmark::State& state, const PrefixIndex& index, const MatchQuery& query) {
  std::vector<double> ns;
  ns.reserve(1 << 16);
  size_t matched = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = index.Match(query);
    const auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(r);
    matched = r->workers.size();
    if (ns.size() < ns.capacity()) ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  state.counters["workers"] = static_cast<double>(matched);
  ReportPercentiles(state, ns);
}

// Args: prompt tokens, hit ratio in percent, holders of the hot prefix.
void BM_Match(benchmark::State& state) {
  const Corpus& corpus = CorpusWithHolders(static_cast<int>(state.range(2)));
  const std::vector<uint32_t> prompt = PartlyCachedPrompt(corpus, state.range(0), static_cast<int>(state.range(1)));
  TimeMatch(state, corpus.index, MatchQuery{.model = bench::kModel, .token_ids = prompt});
}
BENCHMARK(BM_Match)
    ->ArgNames({"tokens", "hit", "holders"})
    ->ArgsProduct({{512, 2048, 8192, 32768}, {0, 50, 100}, {1, 100}})
    ->Unit(benchmark::kMicrosecond);

// BM_Match's query sent as its block hashes (a gateway that hashes the
// prompt itself): the lookups alone, without hashing. Args as BM_Match's.
void BM_MatchByHashes(benchmark::State& state) {
  const Corpus& corpus = CorpusWithHolders(static_cast<int>(state.range(2)));
  const std::vector<uint32_t> prompt = PartlyCachedPrompt(corpus, state.range(0), static_cast<int>(state.range(1)));
  const std::vector<uint64_t> hashes = HashPrefix(ContextSeed(bench::kModel, "", kBlockSize), prompt, kBlockSize);
  TimeMatch(state, corpus.index, MatchQuery{.model = bench::kModel, .block_hashes = hashes});
}
BENCHMARK(BM_MatchByHashes)
    ->ArgNames({"tokens", "hit", "holders"})
    ->ArgsProduct({{8192}, {50}, {1, 100}})
    ->Unit(benchmark::kMicrosecond);

// Match of prompts spread over the whole index, as a gateway sends them: each
// call asks for a different background chain (1,600 tokens, 100 blocks, held
// by one worker), so its blocks are scattered over the 1M-entry tables and
// mostly not in cache — unlike BM_Match, which asks for the same hot prefix.
void BM_MatchColdChain(benchmark::State& state) {
  const Corpus& corpus = CorpusWithHolders(1);
  std::vector<MatchQuery> queries;
  for (const auto& tokens : corpus.background) queries.push_back({.model = bench::kModel, .token_ids = tokens});
  std::shuffle(queries.begin(), queries.end(), std::mt19937_64(3));
  std::vector<double> ns;
  ns.reserve(1 << 16);
  size_t next = 0, full = 0, calls = 0;
  for (auto _ : state) {
    const MatchQuery& query = queries[next++ % queries.size()];
    const auto t0 = std::chrono::steady_clock::now();
    auto r = corpus.index.Match(query);
    const auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(r);
    full += !r->workers.empty() && r->workers[0].matched_blocks == 100;
    ++calls;
    if (ns.size() < ns.capacity()) ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  state.counters["full_match_pct"] = 100.0 * static_cast<double>(full) / static_cast<double>(std::max<size_t>(calls, 1));
  ReportPercentiles(state, ns);
}
BENCHMARK(BM_MatchColdChain)->Unit(benchmark::kMicrosecond);

// The workers of the Apply benchmarks.
std::vector<WorkerKey> BenchWorkers() {
  std::vector<WorkerKey> workers;
  for (int w = 0; w < kWorkers; ++w) workers.push_back(bench::BenchWorker(w));
  return workers;
}

// 64 random token sequences of `n` tokens (the Apply benchmarks cycle through them).
std::vector<std::vector<uint32_t>> TokenPool(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<uint32_t>> pool(64);
  for (auto& t : pool) t = RandomTokens(rng, n);
  return pool;
}

// One thread's share of a steady-state feed: the workers w with w % threads
// == thread, round robin; each batch stores `blocks` new blocks chained to the
// worker's previous batch and removes the blocks it stored kKeep batches
// earlier.
class SteadyStateFeed {
 public:
  static constexpr size_t kKeep = 640;  // batches each worker keeps

  SteadyStateFeed(size_t blocks, size_t thread, size_t threads)
      : blocks_(blocks), tokens_(TokenPool(11 + thread, blocks * kBlockSize)), all_(BenchWorkers()) {
    for (size_t w = thread; w < all_.size(); w += threads) mine_.push_back(w);
    batch_.events = {BlockStored{}, BlockRemoved{}};
    std::get<BlockStored>(batch_.events[0]).block_size = kBlockSize;
    std::get<BlockStored>(batch_.events[0]).block_hashes.resize(blocks);
    std::get<BlockRemoved>(batch_.events[1]).block_hashes.resize(blocks);
  }

  // Applies batches until each of this thread's workers keeps kKeep (untimed: the steady size).
  void Fill(PrefixIndex& index) {
    while (i_ < kKeep * mine_.size()) ApplyNext(index);
  }

  void ApplyNext(PrefixIndex& index) {
    auto& stored = std::get<BlockStored>(batch_.events[0]);
    auto& removed = std::get<BlockRemoved>(batch_.events[1]);
    const size_t w = mine_[i_ % mine_.size()], n = i_ / mine_.size();
    stored.parent_block_hash = n == 0 ? std::nullopt : std::optional<uint64_t>(EngineHash(w, n - 1, blocks_ - 1));
    stored.token_ids = tokens_[i_ % tokens_.size()];
    for (size_t b = 0; b < blocks_; ++b) {
      stored.block_hashes[b] = EngineHash(w, n, b);
      removed.block_hashes[b] = n >= kKeep ? EngineHash(w, n - kKeep, b) : 0;
    }
    (void)index.Apply(all_[w], context_, batch_);
    ++i_;
  }

 private:
  // Engine hash of block b of worker w's n-th batch; unique across workers.
  uint64_t EngineHash(size_t w, size_t n, size_t b) const { return ((n * kWorkers + w) * blocks_ + b) * 2 + 1; }

  const size_t blocks_;
  const std::vector<std::vector<uint32_t>> tokens_;
  const std::vector<WorkerKey> all_;
  const WorkerContext context_{bench::kModel, ""};
  std::vector<size_t> mine_;
  EventBatch batch_;
  size_t i_ = 0;
};

// Apply of decoded batches as a busy engine sends them (SteadyStateFeed),
// round robin over 100 workers: a steady state of ~1M entries (at 16 blocks;
// 4M at 64), reached before timing starts. items = blocks stored (each with
// one removed).
void BM_ApplySteadyState(benchmark::State& state) {
  const size_t blocks = state.range(0);
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
  SteadyStateFeed feed(blocks, 0, 1);
  feed.Fill(index);
  for (auto _ : state) feed.ApplyNext(index);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * blocks));
  state.counters["entries"] = static_cast<double>(index.Stats().entries);
}
BENCHMARK(BM_ApplySteadyState)->Arg(16)->Arg(64)->ArgName("blocks");

// The index every thread of one BM_ApplyParallel run shares: made by the first
// thread that asks, dropped when the run's last thread lets go.
std::shared_ptr<PrefixIndex> SharedIndex() {
  static absl::Mutex mu;
  static std::weak_ptr<PrefixIndex> current;
  absl::MutexLock lock(&mu);
  std::shared_ptr<PrefixIndex> index = current.lock();
  if (index == nullptr) {
    index = std::make_shared<PrefixIndex>(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
    current = index;
  }
  return index;
}

// BM_ApplySteadyState's feed from 1 or 2 threads into one index, each thread
// applying its own half of the workers (as the subscriber threads do, a worker
// always on the same thread): how ingestion scales with the cores (issue 19:
// 2 threads >= 1.7x one). 16-block batches. items = blocks stored, all threads
// together, per second of wall time.
void BM_ApplyParallel(benchmark::State& state) {
  constexpr size_t kBlocks = 16;
  std::shared_ptr<PrefixIndex> index = SharedIndex();
  SteadyStateFeed feed(kBlocks, state.thread_index(), state.threads());
  feed.Fill(*index);
  for (auto _ : state) feed.ApplyNext(*index);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBlocks));
}
BENCHMARK(BM_ApplyParallel)->Threads(1)->Threads(2)->UseRealTime();

// Apply while an index fills from empty to 1M entries (100 workers, chains of
// 16 blocks, no removals): blocks stored per second, the tables' growth
// included. The index is rebuilt, untimed, once it is full.
void BM_ApplyFill(benchmark::State& state) {
  constexpr size_t kBlocks = 16;
  constexpr size_t kBatchesPerWorker = kBackgroundBlocksPerWorker / kBlocks;
  const std::vector<std::vector<uint32_t>> tokens = TokenPool(13, kBlocks * kBlockSize);
  const std::vector<WorkerKey> workers = BenchWorkers();
  const WorkerContext context{bench::kModel, ""};
  EventBatch batch;
  batch.events = {BlockStored{}};
  auto& stored = std::get<BlockStored>(batch.events[0]);
  stored.block_size = kBlockSize;
  stored.block_hashes.resize(kBlocks);
  auto index = std::make_unique<PrefixIndex>(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
  size_t i = 0;
  for (auto _ : state) {
    if (i == kWorkers * kBatchesPerWorker) {
      state.PauseTiming();
      index = std::make_unique<PrefixIndex>(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
      i = 0;
      state.ResumeTiming();
    }
    const size_t w = i % kWorkers, n = i / kWorkers;
    const uint64_t base = (n * kWorkers + w) * kBlocks;  // engine hashes unique across workers
    stored.parent_block_hash = n == 0 ? std::nullopt : std::optional<uint64_t>(base - kWorkers * kBlocks + kBlocks - 1);
    stored.token_ids = tokens[i % tokens.size()];
    for (size_t b = 0; b < kBlocks; ++b) stored.block_hashes[b] = base + b;
    (void)index->Apply(workers[w], context, batch);
    ++i;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBlocks));
}
BENCHMARK(BM_ApplyFill);

// Apply when every stored block overflows the worker's cap (10k blocks, 100
// workers): each block stored costs an eviction too. items = blocks stored.
void BM_ApplyWithCapEviction(benchmark::State& state) {
  const size_t blocks_per_event = state.range(0);
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = kBackgroundBlocksPerWorker, .max_entries = 0});
  std::mt19937_64 rng(11);
  std::vector<EventBatch> batches(256);
  for (auto& b : batches) {
    BlockStored s;
    s.block_size = kBlockSize;
    s.token_ids = RandomTokens(rng, blocks_per_event * kBlockSize);
    s.block_hashes.resize(blocks_per_event);
    b.events.push_back(std::move(s));
  }
  const std::vector<WorkerKey> workers = BenchWorkers();
  const WorkerContext context{bench::kModel, ""};
  uint64_t next_hash = 1;
  size_t i = 0;
  for (auto _ : state) {
    EventBatch& b = batches[i % batches.size()];
    for (auto& h : std::get<BlockStored>(b.events[0]).block_hashes) h = next_hash++;  // new blocks each time
    (void)index.Apply(workers[i % workers.size()], context, b);
    ++i;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * blocks_per_event));
}
BENCHMARK(BM_ApplyWithCapEviction)->Arg(16)->ArgName("blocks");

void BM_HashPrefix(benchmark::State& state) {
  std::mt19937_64 rng(3);
  const std::vector<uint32_t> tokens = RandomTokens(rng, state.range(0));
  const uint64_t seed = ContextSeed(bench::kModel, "", kBlockSize);
  for (auto _ : state) benchmark::DoNotOptimize(HashPrefix(seed, tokens, kBlockSize));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * tokens.size()));
  state.SetLabel("items = tokens");
}
BENCHMARK(BM_HashPrefix)->Arg(8192);

// What the hardware allows a Match of 256 cached blocks (BENCHMARKS.md, "Where
// a Match spends its time"): the parts of its work measured without the index.

// A dependent chain of `blocks` XXH3 hashes, each of its parent and 16 tokens
// (72 bytes): the chained hashing a Match by tokens cannot skip.
void BM_FloorHashChain(benchmark::State& state) {
  const size_t blocks = static_cast<size_t>(state.range(0));
  std::mt19937_64 rng(5);
  const std::vector<uint32_t> tokens = RandomTokens(rng, blocks * kBlockSize);
  char buf[8 + 4 * kBlockSize];
  for (auto _ : state) {
    uint64_t h = 1;
    for (size_t b = 0; b < blocks; ++b) {
      std::memcpy(buf, &h, sizeof(h));
      std::memcpy(buf + 8, tokens.data() + b * kBlockSize, 4 * kBlockSize);
      h = XXH3_64bits(buf, sizeof(buf));
    }
    benchmark::DoNotOptimize(h);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * blocks));
  state.SetLabel("items = blocks");
}
BENCHMARK(BM_FloorHashChain)->Arg(256)->ArgName("blocks");

// `reads` 8-byte reads at random places of a `mib` MiB array, a different set
// each call: independent (every address known at once, so the misses overlap,
// as a Match's table reads may) or dependent (each address read from the last:
// a pointer chase, the worst case).
void BM_FloorRandomReads(benchmark::State& state) {
  const size_t reads = static_cast<size_t>(state.range(0));
  const size_t words = (static_cast<size_t>(state.range(1)) << 20) / sizeof(uint64_t);
  const bool dependent = state.range(2) != 0;
  std::mt19937_64 rng(9);
  std::vector<uint64_t> table(words);
  for (auto& w : table) w = rng() % words;  // a random next index for the chase
  std::vector<uint64_t> places(reads * 4096);
  for (auto& p : places) p = rng() % words;
  size_t set = 0;
  for (auto _ : state) {
    const uint64_t* at = places.data() + (set++ % 4096) * reads;
    uint64_t sum = 0;
    if (dependent) {
      uint64_t i = at[0];
      for (size_t r = 0; r < reads; ++r) i = table[i];
      sum = i;
    } else {
      for (size_t r = 0; r < reads; ++r) sum += table[at[r]];
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * reads));
  state.SetLabel("items = reads");
}
BENCHMARK(BM_FloorRandomReads)
    ->ArgNames({"reads", "mib", "dependent"})
    ->ArgsProduct({{256}, {16, 1024}, {0, 1}});

// `locks` uncontended reader locks of absl::Mutex, spread over 64 mutexes (a
// shard lock taken per block, as BlockTable::Find does).
void BM_FloorReaderLocks(benchmark::State& state) {
  const size_t locks = static_cast<size_t>(state.range(0));
  auto mutexes = std::make_unique<absl::Mutex[]>(64);
  for (auto _ : state) {
    for (size_t i = 0; i < locks; ++i) {
      absl::ReaderMutexLock lock(&mutexes[i & 63]);
      benchmark::ClobberMemory();
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * locks));
  state.SetLabel("items = lock + unlock");
}
BENCHMARK(BM_FloorReaderLocks)->Arg(256)->ArgName("locks");

}  // namespace
}  // namespace kvindex

int main(int argc, char** argv) {
  // As in kvindex-server: Debian's Abseil is built with lock-order checking on, which costs
  // a graph update per lock; production turns it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
