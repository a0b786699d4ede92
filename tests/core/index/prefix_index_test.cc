#include "core/index/prefix_index.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "core/index/block_hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

const WorkerKey kA{"ns/a", 0};
const WorkerKey kB{"ns/b", 0};
const WorkerContext kModel{"llama", ""};

// Tokens 1..n.
std::vector<uint32_t> Tokens(uint32_t n, uint32_t first = 1) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

BlockStored Stored(std::vector<uint64_t> hashes, std::optional<uint64_t> parent, std::vector<uint32_t> tokens,
                   uint32_t block_size = 2, std::optional<std::string> medium = std::nullopt,
                   std::optional<std::string> lora = std::nullopt) {
  BlockStored s;
  s.block_hashes = std::move(hashes);
  s.parent_block_hash = parent;
  s.token_ids = std::move(tokens);
  s.block_size = block_size;
  s.medium = std::move(medium);
  s.lora_name = std::move(lora);
  return s;
}

EventBatch Batch(std::vector<Event> events) {
  EventBatch b;
  b.ts = 1700000000.5;
  b.events = std::move(events);
  return b;
}

MatchResult MatchTokens(const PrefixIndex& index, const std::vector<uint32_t>& tokens, std::string_view model = "llama",
                        std::string_view lora = "") {
  auto r = index.Match(MatchQuery{.model = model, .lora_name = lora, .token_ids = tokens});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : MatchResult{};
}

// Matched blocks per worker, in answer order.
std::vector<std::pair<WorkerKey, uint32_t>> Runs(const MatchResult& r) {
  std::vector<std::pair<WorkerKey, uint32_t>> out;
  for (const WorkerMatch& m : r.workers) out.emplace_back(m.worker, m.matched_blocks);
  return out;
}

TEST(PrefixIndexTest, StoredBlocksMatchWithTokensAndQueryShape) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({11, 12}, std::nullopt, Tokens(4))}));
  MatchResult r = MatchTokens(index, Tokens(7));
  EXPECT_EQ(r.block_size, 2u);
  EXPECT_EQ(r.query_blocks, 3u);
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_EQ(r.workers[0].worker, kA);
  EXPECT_EQ(r.workers[0].matched_blocks, 2u);
  EXPECT_EQ(r.workers[0].matched_tokens, 4u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 2u)));
}

// The seed hashed every block of an event from the event's parent; block i must chain from block i-1.
TEST(PrefixIndexTest, LaterBlocksOfOneEventChainFromTheirPredecessor) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2, 3}, std::nullopt, Tokens(6))}));
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(6))), ElementsAre(Pair(kA, 3u)));
  // A prompt that shares only the first block matches only one block.
  std::vector<uint32_t> other = Tokens(6);
  other[2] = 99;
  EXPECT_THAT(Runs(MatchTokens(index, other)), ElementsAre(Pair(kA, 1u)));
}

// A batch's holder updates are queued and carried out shard by shard, in
// chunks when many: a batch of 1000 blocks (stored, one alias of block 0 with
// another medium, some removed, more stored after a clear) ends exactly as
// the same events applied one batch each.
TEST(PrefixIndexTest, LargeBatchEndsAsItsEventsAppliedOneByOne) {
  std::vector<uint64_t> hashes(1000), removed;
  for (uint64_t i = 0; i < hashes.size(); ++i) hashes[i] = 100 + i;
  for (uint64_t i = 500; i < hashes.size(); ++i) removed.push_back(100 + i);
  const std::vector<Event> events = {
      Stored({7}, std::nullopt, Tokens(2)), Stored(hashes, std::nullopt, Tokens(2000)),
      Stored({8}, std::nullopt, Tokens(2), 2, "CPU"), BlockRemoved{removed, std::nullopt},
      AllBlocksCleared{},  Stored(hashes, std::nullopt, Tokens(2000)),
      BlockRemoved{removed, std::nullopt}, Stored({9}, std::nullopt, Tokens(2), 2, "CPU")};
  PrefixIndex batched, one_by_one;
  (void)batched.Apply(kA, kModel, Batch(events));
  for (const Event& e : events) (void)one_by_one.Apply(kA, kModel, Batch({e}));
  for (const PrefixIndex* index : {&batched, &one_by_one}) {
    const MatchResult r = MatchTokens(*index, Tokens(2000));
    ASSERT_EQ(r.workers.size(), 1u);
    EXPECT_EQ(r.workers[0].matched_blocks, 500u);
    EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 500u), Pair("CPU", 1u)));
    EXPECT_EQ(index->Stats().blocks, 500u);
    EXPECT_EQ(index->Stats().entries, 501u);
  }
}

TEST(PrefixIndexTest, ParentIsResolvedThroughTheWorkersEngineHashes) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4))}));
  (void)index.Apply(kA, kModel, Batch({Stored({3}, 2, Tokens(2, 5))}));
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(6))), ElementsAre(Pair(kA, 3u)));
}

TEST(PrefixIndexTest, UnknownParentIsCountedAndNotIndexed) {
  PrefixIndex index;
  ApplyResult r = index.Apply(kA, kModel, Batch({Stored({3, 4}, /*parent=*/999, Tokens(4, 5))}));
  EXPECT_EQ(r.unresolved_parents, 1u);
  EXPECT_EQ(r.blocks_unindexed, 2u);
  EXPECT_EQ(r.blocks_stored, 0u);
  EXPECT_EQ(index.Stats().entries, 0u);
  EXPECT_EQ(index.Stats().unresolved_parents, 1u);
  // Another worker's engine hash does not resolve it either.
  (void)index.Apply(kB, kModel, Batch({Stored({999}, std::nullopt, Tokens(2))}));
  r = index.Apply(kA, kModel, Batch({Stored({3}, 999, Tokens(2, 3))}));
  EXPECT_EQ(r.unresolved_parents, 1u);
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(4))), ElementsAre(Pair(kB, 1u)));
}

TEST(PrefixIndexTest, RemovedTouchesOnlyTheSendingWorker) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4))}));
  (void)index.Apply(kB, kModel, Batch({Stored({7, 8}, std::nullopt, Tokens(4))}));
  ApplyResult r = index.Apply(kA, kModel, Batch({BlockRemoved{{2}, "GPU"}}));
  EXPECT_EQ(r.blocks_removed, 1u);
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(4))), ElementsAre(Pair(kB, 2u), Pair(kA, 1u)));
  // B's engine hash means nothing to A.
  r = index.Apply(kA, kModel, Batch({BlockRemoved{{7}, std::nullopt}}));
  EXPECT_EQ(r.unknown_removals, 1u);
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(4))), ElementsAre(Pair(kB, 2u), Pair(kA, 1u)));
}

TEST(PrefixIndexTest, AllBlocksClearedTouchesOnlyTheSendingWorker) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4))}));
  (void)index.Apply(kB, kModel, Batch({Stored({7, 8}, std::nullopt, Tokens(4))}));
  ApplyResult r = index.Apply(kA, kModel, Batch({AllBlocksCleared{}}));
  EXPECT_EQ(r.clears, 1u);
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(4))), ElementsAre(Pair(kB, 2u)));
  EXPECT_EQ(index.GetWorkerStats(kA)->blocks, 0u);
}

TEST(PrefixIndexTest, RemoveWorkerAndRemovePodDropEverything) {
  PrefixIndex index;
  const WorkerKey a1{"ns/a", 1};
  (void)index.Apply(kA, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  (void)index.Apply(a1, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  (void)index.Apply(kB, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  index.RemoveWorker(kB);
  EXPECT_FALSE(index.GetWorkerStats(kB).has_value());
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(2))), ElementsAre(Pair(kA, 1u), Pair(a1, 1u)));
  index.RemovePod("ns/a");
  EXPECT_TRUE(MatchTokens(index, Tokens(2)).workers.empty());
  const IndexStats s = index.Stats();
  EXPECT_EQ(s.workers, 0u);
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.blocks, 0u);
  index.RemoveWorker(kB);  // unknown: no-op
}

TEST(PrefixIndexTest, ClearWorkerKeepsTheWorkerKnown) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  index.ClearWorker(kA);
  ASSERT_TRUE(index.GetWorkerStats(kA).has_value());
  EXPECT_EQ(index.GetWorkerStats(kA)->blocks, 0u);
  EXPECT_TRUE(MatchTokens(index, Tokens(2)).workers.empty());
}

TEST(PrefixIndexTest, MatchCountsOnlyBlocksContiguousFromBlockZero) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2, 3, 4}, std::nullopt, Tokens(8))}));
  (void)index.Apply(kA, kModel, Batch({BlockRemoved{{3}, std::nullopt}}));
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(8))), ElementsAre(Pair(kA, 2u)));
  (void)index.Apply(kA, kModel, Batch({BlockRemoved{{1}, std::nullopt}}));
  EXPECT_TRUE(MatchTokens(index, Tokens(8)).workers.empty());
}

TEST(PrefixIndexTest, MediumIsKeptPerBlockAndWorker) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4), 2, "GPU")}));
  (void)index.Apply(kA, kModel, Batch({Stored({1}, std::nullopt, Tokens(2), 2, "CPU")}));
  MatchResult r = MatchTokens(index, Tokens(4));
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 2u), Pair("CPU", 1u)));

  (void)index.Apply(kA, kModel, Batch({BlockRemoved{{1}, "GPU"}}));  // still on CPU
  r = MatchTokens(index, Tokens(4));
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_EQ(r.workers[0].matched_blocks, 2u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 1u), Pair("CPU", 1u)));
  EXPECT_THAT(index.GetWorkerStats(kA)->blocks_by_medium, ElementsAre(Pair("GPU", 1u), Pair("CPU", 1u)));

  (void)index.Apply(kA, kModel, Batch({BlockRemoved{{1}, "CPU"}}));
  EXPECT_TRUE(MatchTokens(index, Tokens(4)).workers.empty());
}

TEST(PrefixIndexTest, MediumWeightsScoreAndOrderWorkers) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4), 2, "CPU")}));
  (void)index.Apply(kB, kModel, Batch({Stored({1}, std::nullopt, Tokens(2), 2, "GPU")}));
  const std::vector<uint32_t> tokens = Tokens(4);
  MatchQuery q{.model = "llama", .token_ids = tokens};
  EXPECT_THAT(Runs(*index.Match(q)), ElementsAre(Pair(kA, 2u), Pair(kB, 1u)));
  q.medium_weights = {{"GPU", 1.0}, {"CPU", 0.25}};
  auto r = index.Match(q);
  EXPECT_THAT(Runs(*r), ElementsAre(Pair(kB, 1u), Pair(kA, 2u)));
  EXPECT_DOUBLE_EQ(r->workers[0].score, 1.0);
  EXPECT_DOUBLE_EQ(r->workers[1].score, 0.5);
}

// A tier without a weight weighs 1.0; a block held on several tiers scores the heaviest.
TEST(PrefixIndexTest, UnweightedTiersWeighOneAndABlockScoresItsHeaviestTier) {
  const WorkerKey kC{"ns/c", 0};
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2, 3}, std::nullopt, Tokens(6), 2, "GPU")}));
  (void)index.Apply(kB, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4), 2, "CPU")}));
  (void)index.Apply(kC, kModel, Batch({Stored({1, 2, 3}, std::nullopt, Tokens(6), 2, "DISK"),
                                 Stored({1}, std::nullopt, Tokens(2), 2, "CPU")}));  // block 0 on DISK and CPU
  const std::vector<uint32_t> tokens = Tokens(6);
  auto scored = [&](absl::flat_hash_map<std::string, double> weights) {
    absl::StatusOr<MatchResult> r =
        index.Match(MatchQuery{.model = "llama", .token_ids = tokens, .medium_weights = std::move(weights)});
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<std::pair<WorkerKey, double>> out;
    if (r.ok()) {
      for (const WorkerMatch& m : r->workers) out.emplace_back(m.worker, m.score);
    }
    return out;
  };
  // GPU 3 blocks x 1 (unlisted); CPU 2 x 2.5; DISK 0.5, but C's block 0 is also on CPU: 2.5 + 2 x 0.5.
  EXPECT_THAT(scored({{"CPU", 2.5}, {"DISK", 0.5}}),
              ElementsAre(Pair(kB, 5.0), Pair(kC, 3.5), Pair(kA, 3.0)));
  // Only DISK listed: GPU and CPU weigh 1.0, C's CPU block scores DISK's 4.
  EXPECT_THAT(scored({{"DISK", 4.0}}), ElementsAre(Pair(kC, 12.0), Pair(kA, 3.0), Pair(kB, 2.0)));
  // Only GPU listed, below the others' 1.0.
  EXPECT_THAT(scored({{"GPU", 0.25}}), ElementsAre(Pair(kC, 3.0), Pair(kB, 2.0), Pair(kA, 0.75)));
}

// Workers that tie on score and blocks come in key order: pod name
// (byte-wise; a prefix first), then dp rank. The names here share prefixes
// of every length, differ beyond 8 bytes after them, end early, and hold
// bytes over 0x7f (which order as unsigned).
TEST(PrefixIndexTest, TiedWorkersComeInKeyOrder) {
  std::vector<WorkerKey> keys = {
      {"ns/pod", 0},          {"ns/pod-10", 0},       {"ns/pod-9", 0},  {"ns/pod-1", 1}, {"ns/pod-1", 0},
      {"ns/pod-abcdefgh-2", 0}, {"ns/pod-abcdefgh-1", 0}, {"ns/pod-abcdefgh", 0}, {"ns/Pod", 0}, {"ns/p\xc3\xa9", 0},
      {"ns/pod-1x", 3},       {"ns/p\x80", 0},       {"ns/q", 0},
  };
  PrefixIndex index;
  for (const WorkerKey& k : keys) (void)index.Apply(k, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  std::vector<WorkerKey> got;
  for (const WorkerMatch& m : MatchTokens(index, Tokens(2)).workers) got.push_back(m.worker);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(got, keys);
  // Pods sharing nothing beyond the namespace, and a single one.
  PrefixIndex two;
  (void)two.Apply(kB, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  (void)two.Apply(kA, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  EXPECT_THAT(Runs(MatchTokens(two, Tokens(2))), ElementsAre(Pair(kA, 1u), Pair(kB, 1u)));
}

TEST(PrefixIndexTest, CandidatePodsFilterTheAnswer) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  (void)index.Apply(kB, kModel, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  const std::vector<uint32_t> tokens = Tokens(2);
  const std::vector<std::string> only_b = {"ns/b"};
  auto r = index.Match(MatchQuery{.model = "llama", .token_ids = tokens, .pods = only_b});
  EXPECT_THAT(Runs(*r), ElementsAre(Pair(kB, 1u)));
  const std::vector<std::string> nobody = {"ns/zzz"};
  r = index.Match(MatchQuery{.model = "llama", .token_ids = tokens, .pods = nobody});
  EXPECT_TRUE(r->workers.empty());
  EXPECT_EQ(r->block_size, 2u);
}

TEST(PrefixIndexTest, PodsWithDifferentBlockSizesBothMatch) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4), 2)}));
  (void)index.Apply(kB, kModel, Batch({Stored({9}, std::nullopt, Tokens(4), 4)}));
  MatchResult r = MatchTokens(index, Tokens(5));
  ASSERT_EQ(r.workers.size(), 2u);
  for (const WorkerMatch& m : r.workers) {
    EXPECT_EQ(m.matched_tokens, 4u) << WorkerKeyString(m.worker);
    EXPECT_EQ(m.block_size, m.worker == kA ? 2u : 4u);
  }
}

TEST(PrefixIndexTest, LoraComesFromTheEventElseTheWorkerDefault) {
  PrefixIndex index;
  (void)index.Apply(kA, WorkerContext{"llama", "from-label"}, Batch({Stored({1}, std::nullopt, Tokens(2))}));
  (void)index.Apply(kB, WorkerContext{"llama", "from-label"},
              Batch({Stored({1}, std::nullopt, Tokens(2), 2, std::nullopt, "from-event")}));
  EXPECT_TRUE(MatchTokens(index, Tokens(2)).workers.empty());
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(2), "llama", "from-label")), ElementsAre(Pair(kA, 1u)));
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(2), "llama", "from-event")), ElementsAre(Pair(kB, 1u)));
  EXPECT_TRUE(MatchTokens(index, Tokens(2), "other-model", "from-label").workers.empty());
}

TEST(PrefixIndexTest, HashQueriesUseTheDocumentedIndexHash) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2, 3}, std::nullopt, Tokens(6))}));
  const std::vector<uint64_t> hashes = HashPrefix(ContextSeed("llama", "", 2), Tokens(6), 2);
  auto r = index.Match(MatchQuery{.model = "llama", .block_hashes = hashes});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->query_blocks, 3u);
  ASSERT_THAT(Runs(*r), ElementsAre(Pair(kA, 3u)));
  EXPECT_EQ(r->workers[0].matched_tokens, 6u);
}

TEST(PrefixIndexTest, BadQueriesAreInvalidArgument) {
  PrefixIndex index;
  const std::vector<uint32_t> tokens = Tokens(4);
  const std::vector<uint64_t> hashes = {1};
  EXPECT_EQ(index.Match(MatchQuery{.model = "", .token_ids = tokens}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(index.Match(MatchQuery{.model = "m"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(index.Match(MatchQuery{.model = "m", .token_ids = tokens, .block_hashes = hashes}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto unknown = index.Match(MatchQuery{.model = "m", .token_ids = tokens});
  ASSERT_TRUE(unknown.ok());
  EXPECT_TRUE(unknown->workers.empty());
  EXPECT_EQ(unknown->block_size, 0u);
}

// One single-block prompt per engine hash h: tokens {h, h}.
EventBatch StoreSingle(uint64_t h) {
  return Batch({Stored({h}, std::nullopt, {static_cast<uint32_t>(h), static_cast<uint32_t>(h)})});
}

TEST(PrefixIndexTest, PerWorkerCapEvictsGivingStoredBlocksASecondChance) {
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 4});
  for (uint64_t h = 1; h <= 4; ++h) (void)index.Apply(kA, kModel, StoreSingle(h));
  // The fifth block overflows the cap: marks are cleared until an unmarked block is found and evicted.
  ApplyResult r = index.Apply(kA, kModel, StoreSingle(5));
  EXPECT_EQ(r.evictions, 1u);
  ASSERT_EQ(index.GetWorkerStats(kA)->blocks, 4u);
  // Store again every survivor but one: that one is now the only unmarked block.
  std::vector<uint64_t> held = index.EngineHashes(kA);
  std::sort(held.begin(), held.end());
  const uint64_t cold = held.front() == 5 ? held[1] : held.front();
  for (uint64_t h : held) {
    if (h != cold) (void)index.Apply(kA, kModel, StoreSingle(h));
  }
  r = index.Apply(kA, kModel, StoreSingle(6));
  EXPECT_EQ(r.evictions, 1u);
  held = index.EngineHashes(kA);
  EXPECT_EQ(held.size(), 4u);
  EXPECT_EQ(std::count(held.begin(), held.end(), cold), 0) << "the only block not stored since it was looked at goes first";
  EXPECT_TRUE(MatchTokens(index, {static_cast<uint32_t>(cold), static_cast<uint32_t>(cold)}).workers.empty());
  EXPECT_EQ(index.GetWorkerStats(kA)->evictions, 2u);
  EXPECT_EQ(index.Stats().evictions, 2u);
}

TEST(PrefixIndexTest, GlobalCapEvictsFromTheWorkerHoldingTheMost) {
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 4});
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4))}));
  // B floods: the cap is enforced on B, A keeps its blocks.
  (void)index.Apply(kB, kModel, Batch({Stored({1, 2, 3, 4}, std::nullopt, Tokens(8, 50))}));
  const IndexStats s = index.Stats();
  EXPECT_EQ(s.entries, 4u);
  EXPECT_EQ(s.evictions, 2u);
  EXPECT_THAT(Runs(MatchTokens(index, Tokens(4))), ElementsAre(Pair(kA, 2u)));
  EXPECT_EQ(index.GetWorkerStats(kB)->blocks, 2u);
  EXPECT_EQ(index.GetWorkerStats(kB)->evictions, 2u);
}

// Eviction goes leaves first, as engines evict: a chain longer than a cap
// keeps its first blocks and still matches them (a block evicted from the
// middle would leave the rest unmatchable). Hashes 1..n, two tokens a block.
EventBatch Chain(uint64_t first, uint64_t n, std::optional<uint64_t> parent) {
  std::vector<uint64_t> hashes;
  for (uint64_t h = first; h < first + n; ++h) hashes.push_back(h);
  return Batch({Stored(hashes, parent, Tokens(2 * n, 2 * (first - 1) + 1))});
}

TEST(PrefixIndexTest, ChainsUnderCapsAnswerTheirSurvivingPrefixes) {
  // The worker's own cap: a 20-block chain under a cap of 10.
  PrefixIndex capped(IndexOptions{.max_blocks_per_worker = 10, .max_entries = 0});
  EXPECT_EQ(capped.Apply(kA, kModel, Chain(1, 20, std::nullopt)).evictions, 10u);
  EXPECT_THAT(Runs(MatchTokens(capped, Tokens(40))), ElementsAre(Pair(kA, 10u)));
  // The global cap, the chain continued in a second batch, and a branch off
  // its block 4 that is younger than the chain's tail.
  PrefixIndex global(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 14});
  (void)global.Apply(kA, kModel, Chain(1, 10, std::nullopt));
  (void)global.Apply(kA, kModel, Chain(11, 10, 10));
  std::vector<uint32_t> branch = Tokens(8);
  for (uint32_t t = 0; t < 6; ++t) branch.push_back(1000 + t);
  (void)global.Apply(kA, kModel, Batch({Stored({101, 102, 103}, 4, {1000, 1001, 1002, 1003, 1004, 1005})}));
  EXPECT_EQ(global.Stats().entries, 14u);
  const uint32_t chain = Runs(MatchTokens(global, Tokens(40)))[0].second;
  const uint32_t fork = Runs(MatchTokens(global, branch))[0].second;
  EXPECT_EQ(chain + (fork > 4 ? fork - 4 : 0), 14u) << "every block held is on a matched prefix";
  EXPECT_GE(chain, 4u);
}

TEST(PrefixIndexTest, AliasedEngineBlocksKeepTheIndexBlockUntilTheLastGoes) {
  PrefixIndex index;
  // Two engine hashes for the same tokens (e.g. different image inputs): one index block.
  (void)index.Apply(kA, kModel, Batch({Stored({1}, std::nullopt, Tokens(2), 2, "GPU")}));
  (void)index.Apply(kA, kModel, Batch({Stored({2}, std::nullopt, Tokens(2), 2, "CPU")}));
  EXPECT_EQ(index.Stats().entries, 2u);
  EXPECT_EQ(index.Stats().blocks, 1u);
  (void)index.Apply(kA, kModel, Batch({BlockRemoved{{1}, "GPU"}}));
  MatchResult r = MatchTokens(index, Tokens(2));
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("CPU", 1u)));
  (void)index.Apply(kA, kModel, Batch({BlockRemoved{{2}, "CPU"}}));
  EXPECT_TRUE(MatchTokens(index, Tokens(2)).workers.empty());
  EXPECT_EQ(index.Stats().blocks, 0u);
}

TEST(PrefixIndexTest, StatsReportMemoryAndCounts) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored({1, 2}, std::nullopt, Tokens(4))}));
  (void)index.Apply(kB, kModel, Batch({Stored({3, 4}, std::nullopt, Tokens(4))}));
  const IndexStats s = index.Stats();
  EXPECT_EQ(s.workers, 2u);
  EXPECT_EQ(s.blocks, 2u);
  EXPECT_EQ(s.entries, 4u);
  EXPECT_GT(s.memory_bytes, 4u * 16);
  auto workers = index.ListWorkers();
  ASSERT_EQ(workers.size(), 2u);
  EXPECT_EQ(workers[0].worker, kA);
  EXPECT_EQ(workers[0].model, "llama");
  EXPECT_DOUBLE_EQ(workers[0].last_event_ts, 1700000000.5);
}

// What writer `w` of the concurrency tests applies, in order: 2000 two-block
// chains (one in 50 starts with tokens 1..4), every 7th losing its second
// block, the worker removed every 500 (not at the end: it ends holding blocks).
void ApplyWriterBatches(PrefixIndex& index, uint32_t w) {
  const WorkerKey key{"ns/w" + std::to_string(w), 0};
  for (uint64_t i = 0; i < 2000; ++i) {
    (void)index.Apply(key, kModel, Batch({Stored({i * 2 + 1, i * 2 + 2}, std::nullopt, Tokens(4, 1 + (i % 50) * 4))}));
    if (i % 7 == 0) (void)index.Apply(key, kModel, Batch({BlockRemoved{{i * 2 + 2}, std::nullopt}}));
    if (i % 500 == 250) index.RemoveWorker(key);
  }
}

// Runs the three writers in parallel while a reader matches a 4-block prompt
// whose first two blocks some chains hold. Every answer must be one a serial
// order could give: only the writers' workers, each once; 1 or 2 blocks (the
// chains are two blocks long and none continues another, so block 2 never
// matches); tokens, tiers and score agreeing with the blocks.
void RunWritersAgainstAReader(PrefixIndex& index) {
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    const std::vector<uint32_t> prompt = Tokens(8);
    while (!stop.load()) {
      const MatchResult r = MatchTokens(index, prompt);
      if (r.block_size != 0) {  // 0: no worker of the model yet
        EXPECT_EQ(r.block_size, 2u);
        EXPECT_EQ(r.query_blocks, 4u);
      }
      std::vector<WorkerKey> seen;
      for (const WorkerMatch& m : r.workers) {
        EXPECT_THAT(m.worker.pod, ::testing::AnyOf("ns/w0", "ns/w1", "ns/w2"));
        EXPECT_EQ(std::count(seen.begin(), seen.end(), m.worker), 0) << "a worker named twice";
        seen.push_back(m.worker);
        EXPECT_GE(m.matched_blocks, 1u);
        EXPECT_LE(m.matched_blocks, 2u) << "a match ran past the end of a two-block chain";
        EXPECT_EQ(m.matched_tokens, 2 * m.matched_blocks);
        EXPECT_THAT(m.blocks_by_medium, ElementsAre(Pair("GPU", m.matched_blocks)));
        EXPECT_DOUBLE_EQ(m.score, m.matched_blocks);
      }
      if (::testing::Test::HasFailure()) return;  // one report, not thousands
    }
  });
  std::vector<std::thread> writers;
  for (uint32_t w = 0; w < 3; ++w) writers.emplace_back([&index, w] { ApplyWriterBatches(index, w); });
  for (auto& t : writers) t.join();
  stop = true;
  reader.join();
}

// Ingestion for different workers and Match run in parallel (run under TSan by
// scripts/test --tsan). Consistent: every answer seen meanwhile is possible
// (RunWritersAgainstAReader), and afterwards the index is exactly what
// applying the same batches one worker after the other gives (with only the
// per-worker cap, whose choices depend on the worker's own history).
TEST(PrefixIndexTest, ConcurrentApplyRemoveAndMatchStayConsistent) {
  const IndexOptions options{.max_blocks_per_worker = 64, .max_entries = 0};
  PrefixIndex index(options);
  RunWritersAgainstAReader(index);
  PrefixIndex serial(options);
  for (uint32_t w = 0; w < 3; ++w) ApplyWriterBatches(serial, w);

  for (uint32_t w = 0; w < 3; ++w) {
    const WorkerKey key{"ns/w" + std::to_string(w), 0};
    SCOPED_TRACE(WorkerKeyString(key));
    std::vector<uint64_t> concurrent_hashes = index.EngineHashes(key), serial_hashes = serial.EngineHashes(key);
    std::sort(concurrent_hashes.begin(), concurrent_hashes.end());
    std::sort(serial_hashes.begin(), serial_hashes.end());
    EXPECT_EQ(concurrent_hashes, serial_hashes);
    EXPECT_GT(concurrent_hashes.size(), 0u);
    EXPECT_LE(concurrent_hashes.size(), 64u);
    const std::optional<WorkerStats> concurrent_stats = index.GetWorkerStats(key), serial_stats = serial.GetWorkerStats(key);
    ASSERT_TRUE(concurrent_stats.has_value());
    ASSERT_TRUE(serial_stats.has_value());
    EXPECT_EQ(concurrent_stats->blocks, serial_stats->blocks);
    EXPECT_EQ(concurrent_stats->evictions, serial_stats->evictions);
  }
  EXPECT_EQ(index.Stats().entries, serial.Stats().entries);
  EXPECT_EQ(index.Stats().blocks, serial.Stats().blocks);
  EXPECT_EQ(index.Stats().evictions, serial.Stats().evictions);
  // And so does every answer: each chain's first tokens, and each chain's start.
  for (uint32_t k = 0; k < 50; ++k) {
    EXPECT_EQ(Runs(MatchTokens(index, Tokens(8, 1 + k * 4))), Runs(MatchTokens(serial, Tokens(8, 1 + k * 4)))) << k;
  }
}

// With the global cap binding (three workers of up to 64 blocks against 100
// entries), concurrent ingestion still gives only possible answers and ends
// within the cap.
TEST(PrefixIndexTest, GlobalCapHoldsUnderConcurrentApply) {
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 64, .max_entries = 100});
  RunWritersAgainstAReader(index);
  uint64_t held = 0;
  for (const WorkerStats& w : index.ListWorkers()) held += w.blocks;
  EXPECT_LE(held, 100u);
  EXPECT_EQ(index.Stats().entries, held);
  EXPECT_GT(index.Stats().evictions, 0u);
}

// A long walk keeps many shard locks at once (one per shard it met) while
// writers need them: two readers matching a 300-block prompt (every shard,
// past ThreadSanitizer's 32-lock cap of the set) against two writers storing
// and clearing that chain must all finish, see only possible answers, and
// leave the writers' last state.
TEST(PrefixIndexTest, LongWalksAndWritersShareTheShardsWithoutDeadlock) {
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0});
  constexpr uint32_t kBlocks = 300, kRounds = 200;
  const std::vector<uint32_t> prompt = Tokens(2 * kBlocks);
  std::atomic<bool> stop{false};
  auto read = [&] {
    while (!stop.load()) {
      for (const WorkerMatch& m : MatchTokens(index, prompt).workers) {
        EXPECT_LE(m.matched_blocks, kBlocks);
        EXPECT_EQ(m.matched_tokens, 2 * m.matched_blocks);
      }
      if (::testing::Test::HasFailure()) return;
    }
  };
  auto write = [&](uint32_t w) {
    const WorkerKey key{"ns/long" + std::to_string(w), 0};
    for (uint32_t round = 0; round < kRounds; ++round) {
      (void)index.Apply(key, kModel, Chain(1, kBlocks, std::nullopt));
      if (round + 1 < kRounds) (void)index.Apply(key, kModel, Batch({AllBlocksCleared{}}));
    }
  };
  std::vector<std::thread> readers, writers;
  for (int r = 0; r < 2; ++r) readers.emplace_back(read);
  for (uint32_t w = 0; w < 2; ++w) writers.emplace_back(write, w);
  for (auto& t : writers) t.join();
  stop = true;
  for (auto& t : readers) t.join();
  const MatchResult r = MatchTokens(index, prompt);
  ASSERT_EQ(r.workers.size(), 2u);
  for (const WorkerMatch& m : r.workers) EXPECT_EQ(m.matched_blocks, kBlocks);
}

}  // namespace
}  // namespace kvindex
