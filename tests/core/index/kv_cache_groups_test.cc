// KV cache groups of hybrid models (gpt-oss, Gemma 3: full + sliding window;
// Qwen3-Next: attention + Mamba): each group's blocks are held apart, and
// Match answers the longest prefix every group accepts by vLLM's hit rules
// (../shared/wire/README.md "Hybrid models").

#include <optional>
#include <string>
#include <vector>

#include "core/index/block_hash.h"
#include "core/index/prefix_index.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;

const WorkerKey kA{"ns/a", 0};
const WorkerKey kB{"ns/b", 0};
const WorkerContext kModel{"llama", ""};
constexpr uint32_t kBlockSize = 2;

// Tokens 1..n.
std::vector<uint32_t> Tokens(uint32_t n) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = i + 1;
  return t;
}

// Engine hash of block i at block size bs (the same in every group of that size, as vLLM's).
uint64_t H(uint32_t i, uint32_t bs = kBlockSize) { return 1000 * bs + i; }

// Blocks [first, first + n) of the prompt Tokens(), stored in `group` of `kind`.
BlockStored Stored(std::optional<uint32_t> group, std::optional<std::string> kind, uint32_t first, uint32_t n,
                   uint32_t bs = kBlockSize, std::optional<uint32_t> window = std::nullopt) {
  BlockStored s;
  for (uint32_t i = first; i < first + n; ++i) s.block_hashes.push_back(H(i, bs));
  if (first > 0) s.parent_block_hash = H(first - 1, bs);
  const std::vector<uint32_t> all = Tokens((first + n) * bs);
  s.token_ids.assign(all.begin() + first * bs, all.end());
  s.block_size = bs;
  s.group_idx = group;
  s.kv_cache_spec_kind = std::move(kind);
  s.kv_cache_spec_sliding_window = window;
  return s;
}

BlockStored Full(uint32_t first, uint32_t n, uint32_t bs = kBlockSize) {
  return Stored(0, "full_attention", first, n, bs);
}
// A sliding window of 4 tokens: a hit needs the ceil(3/2) = 2 blocks before its end.
BlockStored Window(uint32_t first, uint32_t n) { return Stored(1, "sliding_window", first, n, kBlockSize, 4); }
BlockStored Mamba(uint32_t first, uint32_t n, uint32_t bs = kBlockSize) { return Stored(1, "mamba", first, n, bs); }

BlockRemoved Removed(uint32_t group, std::vector<uint32_t> blocks, uint32_t bs = kBlockSize) {
  BlockRemoved r;
  for (uint32_t i : blocks) r.block_hashes.push_back(H(i, bs));
  r.group_idx = group;
  return r;
}

EventBatch Batch(std::vector<Event> events) {
  EventBatch b;
  b.events = std::move(events);
  return b;
}

// (matched_tokens, matched_blocks) of kA for a 12-token prompt; (0, 0) when absent.
std::pair<uint32_t, uint32_t> Hit(const PrefixIndex& index, uint32_t prompt_tokens = 12) {
  const std::vector<uint32_t> tokens = Tokens(prompt_tokens);
  absl::StatusOr<MatchResult> r = index.Match(MatchQuery{.model = "llama", .token_ids = tokens});
  EXPECT_TRUE(r.ok()) << r.status();
  for (const WorkerMatch& m : r.ok() ? r->workers : std::vector<WorkerMatch>{}) {
    if (m.worker == kA) return {m.matched_tokens, m.matched_blocks};
  }
  return {0, 0};
}

TEST(KvCacheGroupsTest, AWindowGroupsEarlyRemovalLeavesTheFullGroupsCopy) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Full(0, 6), Window(0, 6)}));
  ASSERT_EQ(Hit(index), std::make_pair(12u, 6u));
  // The window moved on: its group dropped blocks 0..3. The full-attention
  // group still holds them, and the window still holds the 2 blocks a hit of
  // 6 blocks needs.
  const ApplyResult r = index.Apply(kA, kModel, Batch({Removed(1, {0, 1, 2, 3})}));
  EXPECT_EQ(r.blocks_removed, 4u);
  EXPECT_EQ(r.unknown_removals, 0u);
  EXPECT_EQ(Hit(index), std::make_pair(12u, 6u));
}

TEST(KvCacheGroupsTest, AHitEndsWhereTheWindowStillHoldsTheBlocksBeforeIt) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Full(0, 6), Window(0, 6)}));
  // Without window blocks 4 and 5, a hit of 6 or 5 blocks would be recomputed
  // by vLLM; a hit of 4 needs blocks 2 and 3, which the window holds.
  (void)index.Apply(kA, kModel, Batch({Removed(1, {4, 5})}));
  EXPECT_EQ(Hit(index), std::make_pair(8u, 4u));
  (void)index.Apply(kA, kModel, Batch({Removed(1, {2})}));  // now a hit of 4 or 3 blocks misses block 2
  EXPECT_EQ(Hit(index), std::make_pair(4u, 2u));
  (void)index.Apply(kA, kModel, Batch({Removed(1, {1})}));  // a hit of 1 block needs block 0 only
  EXPECT_EQ(Hit(index), std::make_pair(2u, 1u));
  (void)index.Apply(kA, kModel, Batch({Removed(1, {0})}));
  EXPECT_EQ(Hit(index), std::make_pair(0u, 0u));
}

TEST(KvCacheGroupsTest, TheFullGroupBoundsTheHit) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Full(0, 6), Window(0, 6)}));
  (void)index.Apply(kA, kModel, Batch({Removed(0, {3})}));  // the full group lacks block 3: at most 3 blocks
  EXPECT_EQ(Hit(index), std::make_pair(6u, 3u));
}

TEST(KvCacheGroupsTest, AMambaGroupNeedsTheStateAtTheBoundary) {
  PrefixIndex index;
  // Mamba keeps the state of block 3 only (its parent is resolved through the
  // full group, which holds the same hashes at the same block size).
  (void)index.Apply(kA, kModel, Batch({Full(0, 6), Mamba(3, 1)}));
  EXPECT_EQ(Hit(index), std::make_pair(8u, 4u));
  (void)index.Apply(kA, kModel, Batch({Mamba(5, 1)}));
  EXPECT_EQ(Hit(index), std::make_pair(12u, 6u));
  EXPECT_EQ(Hit(index, 10), std::make_pair(8u, 4u));  // a shorter prompt ends before block 5
}

TEST(KvCacheGroupsTest, GroupsOfDifferentBlockSizesMeetAtACommonMultiple) {
  PrefixIndex index;
  // Full attention in blocks of 2 tokens, Mamba in blocks of 4: a hit is a
  // multiple of 4 tokens at which the Mamba group holds its state.
  (void)index.Apply(kA, kModel, Batch({Full(0, 6), Mamba(0, 2, 4)}));
  EXPECT_EQ(Hit(index), std::make_pair(8u, 4u));
  (void)index.Apply(kA, kModel, Batch({Removed(1, {1}, 4)}));
  EXPECT_EQ(Hit(index), std::make_pair(4u, 2u));
}

TEST(KvCacheGroupsTest, ARemovalTouchesOnlyItsGroup) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Full(0, 3), Window(0, 3)}));
  (void)index.Apply(kA, kModel, Batch({Removed(1, {0, 1, 2})}));
  const std::optional<WorkerStats> stats = index.GetWorkerStats(kA);
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->blocks, 3u);  // the full-attention group's
  EXPECT_THAT(stats->blocks_by_medium, ElementsAre(Pair("GPU", 3u)));
  EXPECT_THAT(stats->groups, ElementsAre(GroupStats{0, "full_attention", 0, 2, 3},
                                         GroupStats{1, "sliding_window", 4, 2, 0}));
  // A removal naming a group the worker never stored into removes nothing.
  const ApplyResult r = index.Apply(kA, kModel, Batch({Removed(7, {0})}));
  EXPECT_EQ(r.unknown_removals, 1u);
  EXPECT_EQ(index.GetWorkerStats(kA)->blocks, 3u);
}

TEST(KvCacheGroupsTest, AWorkerWhoseEventsNameNoGroupMatchesAsBefore) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Stored(std::nullopt, std::nullopt, 0, 6)}));
  (void)index.Apply(kA, kModel, Batch({Removed(0, {3})}));  // nil group is group 0
  EXPECT_EQ(Hit(index), std::make_pair(6u, 3u));
  EXPECT_THAT(index.GetWorkerStats(kA)->groups, IsEmpty());
  // One named group alone is matched from block 0, whatever its kind.
  (void)index.Apply(kB, kModel, Batch({Stored(0, "sliding_window", 0, 6, kBlockSize, 4)}));
  (void)index.Apply(kB, kModel, Batch({Removed(0, {0})}));
  const std::vector<uint32_t> tokens = Tokens(12);
  absl::StatusOr<MatchResult> r = index.Match(MatchQuery{.model = "llama", .token_ids = tokens});
  ASSERT_TRUE(r.ok());
  for (const WorkerMatch& m : r->workers) EXPECT_NE(m.worker, kB);
}

TEST(KvCacheGroupsTest, GroupsPastTheLimitsAreCountedAndNotIndexed) {
  PrefixIndex index;
  ApplyResult r = index.Apply(kA, kModel, Batch({Stored(1000000000, "full_attention", 0, 3)}));
  EXPECT_EQ(r.blocks_stored, 0u);
  EXPECT_EQ(r.blocks_unindexed, 3u);
  for (uint32_t g = 0; g < 16; ++g) {
    r = index.Apply(kA, kModel, Batch({Stored(g, "full_attention", 0, 1)}));
    EXPECT_EQ(r.blocks_stored, 1u) << g;
  }
  r = index.Apply(kA, kModel, Batch({Stored(16, "full_attention", 0, 1)}));  // a 17th group
  EXPECT_EQ(r.blocks_unindexed, 1u);
  EXPECT_EQ(index.GetWorkerStats(kA)->groups.size(), 16u);
  EXPECT_EQ(Hit(index, 2), std::make_pair(2u, 1u));  // 16 full groups all hold block 0
}

TEST(KvCacheGroupsTest, HashQueriesApplyTheRuleAtThePrimaryBlockSize) {
  PrefixIndex index;
  (void)index.Apply(kA, kModel, Batch({Full(0, 6), Window(0, 6)}));
  (void)index.Apply(kA, kModel, Batch({Removed(1, {4, 5})}));
  const std::vector<uint32_t> tokens = Tokens(12);
  absl::StatusOr<MatchResult> by_tokens = index.Match(MatchQuery{.model = "llama", .token_ids = tokens});
  ASSERT_TRUE(by_tokens.ok());
  // The same query by index hashes (README "Index hash"), as a gateway that hashes itself sends it.
  const std::vector<uint64_t> hashes = HashPrefix(ContextSeed("llama", "", kBlockSize), tokens, kBlockSize);
  absl::StatusOr<MatchResult> by_hashes = index.Match(MatchQuery{.model = "llama", .block_hashes = hashes});
  ASSERT_TRUE(by_hashes.ok());
  ASSERT_EQ(by_hashes->workers.size(), 1u);
  EXPECT_EQ(by_hashes->workers[0].matched_blocks, 4u);
  EXPECT_EQ(by_hashes->workers[0].matched_tokens, 8u);
  EXPECT_EQ(by_tokens->workers[0].matched_blocks, 4u);
}

TEST(KvCacheGroupsTest, ScoreAndMediaCountThePrimaryGroupsBlocksWithinTheHit) {
  PrefixIndex index;
  BlockStored cpu = Full(0, 6);
  cpu.medium = "CPU";
  (void)index.Apply(kA, kModel, Batch({Full(0, 6), cpu, Window(0, 6), Removed(1, {4, 5})}));
  const std::vector<uint32_t> tokens = Tokens(12);
  MatchQuery q{.model = "llama", .token_ids = tokens};
  q.medium_weights = {{"GPU", 1.0}, {"CPU", 0.25}};
  absl::StatusOr<MatchResult> r = index.Match(q);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->workers.size(), 1u);
  EXPECT_EQ(r->workers[0].matched_blocks, 4u);
  EXPECT_EQ(r->workers[0].block_size, 2u);
  EXPECT_THAT(r->workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 4u), Pair("CPU", 4u)));
  EXPECT_DOUBLE_EQ(r->workers[0].score, 4.0);
}

}  // namespace
}  // namespace kvindex
