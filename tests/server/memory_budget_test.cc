// WithMemoryBudget: a budget lowers the speculative cap to what 1/8 of it holds
// (kSpeculativeBytesPerEntry an entry), then both index caps to
// EntriesForMemoryBudget of the rest (kIndexBytesPerEntry an entry, at least
// 1024 entries), never raises them, turns an unlimited cap (0) into the
// budget's, and a budget of 0 changes nothing. kvindex-server's --index_memory_mb end to end:
// tests/server/metrics_test.cc (MetricsProcessTest.IndexMemoryBudgetFlagCapsEntries).

#include "server/memory_budget.h"

#include <cstdint>
#include <vector>

#include "core/events/event_batch.h"
#include "core/index/prefix_index.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

constexpr uint64_t kMiB = 1 << 20;

TEST(EntriesForMemoryBudgetTest, BudgetOverBytesPerEntryWithAFloor) {
  EXPECT_EQ(kIndexBytesPerEntry, 128u);
  EXPECT_EQ(EntriesForMemoryBudget(kMiB), 8192u);  // 1048576 / 128
  EXPECT_EQ(EntriesForMemoryBudget(1024 * kMiB), 8388608u);
  EXPECT_EQ(EntriesForMemoryBudget(128 * 2000), 2000u);
  EXPECT_EQ(EntriesForMemoryBudget(128 * 2000 + 127), 2000u);  // rounded down
  EXPECT_EQ(EntriesForMemoryBudget(128 * 1024), 1024u);
  EXPECT_EQ(EntriesForMemoryBudget(128 * 1024 - 1), 1024u);  // the floor
  EXPECT_EQ(EntriesForMemoryBudget(1), 1024u);
}

TEST(SpeculativeEntriesForMemoryBudgetTest, AnEighthOverBytesPerEntryWithAFloor) {
  EXPECT_EQ(kSpeculativeBytesPerEntry, 400u);
  EXPECT_EQ(SpeculativeEntriesForMemoryBudget(kMiB), 327u);  // 131072 / 400, rounded down
  EXPECT_EQ(SpeculativeEntriesForMemoryBudget(8 * 400 * 1000), 1000u);
  EXPECT_EQ(SpeculativeEntriesForMemoryBudget(1), 1u);
}

// 1 MiB: 327 speculative entries (130800 B) set aside, 917776 B / 128 for the rest.
constexpr uint64_t kMiBEntries = 7170;

TEST(WithMemoryBudgetTest, ZeroBudgetLeavesTheCaps) {
  const IndexOptions in{.max_blocks_per_worker = 5, .max_entries = 0, .shards = 8};
  const IndexOptions out = WithMemoryBudget(in, 0);
  EXPECT_EQ(out.max_blocks_per_worker, 5u);
  EXPECT_EQ(out.max_entries, 0u);
  EXPECT_EQ(out.shards, 8u);
}

TEST(WithMemoryBudgetTest, LowersTheDefaultCapsToTheBudget) {
  const IndexOptions out = WithMemoryBudget(IndexOptions{}, kMiB);
  EXPECT_EQ(out.speculative.max_entries, 327u);
  EXPECT_EQ(out.max_entries, kMiBEntries);
  EXPECT_EQ(out.max_blocks_per_worker, kMiBEntries);
  EXPECT_EQ(out.shards, IndexOptions{}.shards);
}

TEST(WithMemoryBudgetTest, NeverRaisesALowerCap) {
  const IndexOptions out =
      WithMemoryBudget(IndexOptions{.max_blocks_per_worker = 100, .max_entries = 5000}, kMiB);
  EXPECT_EQ(out.max_blocks_per_worker, 100u);
  EXPECT_EQ(out.max_entries, 5000u);
  // One lower, one higher than the budget's 7170: each judged on its own.
  const IndexOptions mixed =
      WithMemoryBudget(IndexOptions{.max_blocks_per_worker = 20000, .max_entries = 3000}, kMiB);
  EXPECT_EQ(mixed.max_blocks_per_worker, kMiBEntries);
  EXPECT_EQ(mixed.max_entries, 3000u);
}

// A lower speculative cap stays, and sets aside only its own bytes.
TEST(WithMemoryBudgetTest, ALowerSpeculativeCapLeavesTheRestToEngineEntries) {
  IndexOptions in;
  in.speculative.max_entries = 100;
  const IndexOptions out = WithMemoryBudget(in, kMiB);
  EXPECT_EQ(out.speculative.max_entries, 100u);
  EXPECT_EQ(out.max_entries, (kMiB - 100 * 400) / 128);
}

TEST(WithMemoryBudgetTest, UnlimitedCapsTakeTheBudget) {
  const IndexOptions out = WithMemoryBudget(IndexOptions{.max_blocks_per_worker = 0, .max_entries = 0}, kMiB);
  EXPECT_EQ(out.max_blocks_per_worker, kMiBEntries);
  EXPECT_EQ(out.max_entries, kMiBEntries);
  IndexOptions unlimited{.max_blocks_per_worker = 0, .max_entries = 0};
  unlimited.speculative.max_entries = 0;
  EXPECT_EQ(WithMemoryBudget(unlimited, kMiB).speculative.max_entries, 327u);
  const IndexOptions tiny = WithMemoryBudget(unlimited, 1);
  EXPECT_EQ(tiny.speculative.max_entries, 1u);
  EXPECT_EQ(tiny.max_blocks_per_worker, 1024u);
  EXPECT_EQ(tiny.max_entries, 1024u);
}

// An index built with a budget's caps and flooded by three workers past them
// holds the budget's entries, and its tables (what kvindex_index_memory_bytes
// reports) fit in the budget.
TEST(WithMemoryBudgetTest, AFloodedIndexStaysWithinTheBudget) {
  constexpr uint64_t kBudget = 4 * kMiB;
  const IndexOptions options = WithMemoryBudget(IndexOptions{}, kBudget);
  const uint64_t cap = options.max_entries;
  ASSERT_LT(cap, EntriesForMemoryBudget(kBudget));  // the speculative entries' share set aside
  PrefixIndex index(options);
  constexpr uint32_t kBlocksPerBatch = 1000;
  uint64_t next_hash = 1;
  uint32_t next_token = 1;
  for (int batch = 0; batch < 60; ++batch) {
    BlockStored stored;
    stored.block_size = 4;
    for (uint32_t b = 0; b < kBlocksPerBatch; ++b) {
      stored.block_hashes.push_back(next_hash++);
      for (int t = 0; t < 4; ++t) stored.token_ids.push_back(next_token++);
    }
    EventBatch events;
    events.ts = 1700000000;
    events.events.push_back(std::move(stored));
    (void)index.Apply(WorkerKey{"default/p", static_cast<uint32_t>(batch % 3)}, WorkerContext{"llama", ""}, events);
  }
  const IndexStats stats = index.Stats();
  EXPECT_EQ(stats.entries, cap);
  EXPECT_EQ(stats.evictions, 60 * kBlocksPerBatch - cap);
  EXPECT_LE(stats.memory_bytes, kBudget);
}

}  // namespace
}  // namespace kvindex
