#include "core/index/internal/block_table.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr MediumMask kGpu = 1, kCpu = 2, kDisk = 4;

std::vector<Holder> HoldersOf(const BlockTable& table, uint64_t x) {
  HolderTable::Scratch scratch;
  return table.WithHolders(x, scratch, [](absl::Span<const Holder> h) { return std::vector<Holder>(h.begin(), h.end()); });
}

// One worker's updates and its lock, as WorkerBlocks holds them.
struct Worker {
  explicit Worker(uint32_t id) : updates(id) {}

  // Queues `ops` and carries them out.
  void Apply(BlockTable& table, std::vector<HolderOp> ops) {
    absl::MutexLock hold(&lock.mu);
    for (const HolderOp& op : ops) EXPECT_FALSE(updates.Push(op));
    table.Apply(updates, lock);
    EXPECT_TRUE(updates.empty());
  }

  WorkerLock lock;
  HolderUpdates updates;
};

TEST(BlockTableTest, HoldersAreSortedByWorkerWithTheirMedia) {
  BlockTable table(4);
  Worker a(7), b(3);
  a.Apply(table, {{10, HolderOp::kAddRef, kGpu}});
  b.Apply(table, {{10, HolderOp::kAddRef, kCpu}});
  EXPECT_THAT(HoldersOf(table, 10), ElementsAre(Holder{3, 1, kCpu, 0}, Holder{7, 1, kGpu, 0}));
  a.Apply(table, {{10, HolderOp::kChangeMedia, kGpu, kGpu | kCpu}});
  EXPECT_THAT(HoldersOf(table, 10), ElementsAre(Holder{3, 1, kCpu, 0}, Holder{7, 1, kGpu | kCpu, 0}));
  b.Apply(table, {{10, HolderOp::kDropRef, kCpu}});
  EXPECT_THAT(HoldersOf(table, 10), ElementsAre(Holder{7, 1, kGpu | kCpu, 0}));
  EXPECT_THAT(HoldersOf(table, 11), IsEmpty());
}

// Two engine blocks of one worker map to X, one on GPU, one on CPU: the holder
// is on both; when the CPU one goes, only the alias counts can tell that the
// holder is on GPU alone.
TEST(BlockTableTest, AliasesKeepTheHoldersMediaTheExactUnion) {
  BlockTable table(4);
  Worker w(1);
  w.Apply(table, {{10, HolderOp::kAddRef, kGpu}, {10, HolderOp::kAddRef, kCpu}});
  EXPECT_THAT(HoldersOf(table, 10), ElementsAre(Holder{1, 2, kGpu | kCpu, 0}));
  w.Apply(table, {{10, HolderOp::kDropRef, kCpu}});
  EXPECT_THAT(HoldersOf(table, 10), ElementsAre(Holder{1, 1, kGpu, 0}));
  w.Apply(table, {{10, HolderOp::kDropRef, kGpu}});
  EXPECT_THAT(HoldersOf(table, 10), IsEmpty());
}

TEST(BlockTableTest, ClearingDropsTheHolderWhateverItsRefs) {
  BlockTable table(4);
  Worker w(1), other(2);
  w.Apply(table, {{10, HolderOp::kAddRef, kGpu}, {10, HolderOp::kAddRef, kCpu}, {11, HolderOp::kAddRef, kGpu}});
  other.Apply(table, {{11, HolderOp::kAddRef, kGpu}});
  w.Apply(table, {{10, HolderOp::kClear}, {11, HolderOp::kClear}});
  {
    absl::MutexLock hold(&w.lock.mu);
    w.updates.ForgetAliases();
  }
  EXPECT_THAT(HoldersOf(table, 10), IsEmpty());
  EXPECT_THAT(HoldersOf(table, 11), ElementsAre(Holder{2, 1, kGpu, 0}));
  // The worker starts afresh: its old alias counts of X (a GPU block) are gone.
  w.Apply(table, {{10, HolderOp::kAddRef, kCpu}, {10, HolderOp::kChangeMedia, kCpu, kDisk}});
  EXPECT_THAT(HoldersOf(table, 10), ElementsAre(Holder{1, 1, kDisk, 0}));
}

// Apply groups the updates by shard; each block's updates keep their order.
TEST(BlockTableTest, UpdatesOfOneBlockKeepTheirOrderAcrossShards) {
  BlockTable table(8);
  Worker w(1);
  std::vector<HolderOp> ops;
  for (uint64_t i = 0; i < 64; ++i) {
    const uint64_t x = i * 0x9e3779b97f4a7c15ULL;  // spread over the top bits, hence the shards
    ops.push_back({x, HolderOp::kAddRef, kGpu});
    ops.push_back({x, HolderOp::kChangeMedia, kGpu, kCpu});
    if (i % 2 == 0) ops.push_back({x, HolderOp::kDropRef, kCpu});
  }
  w.Apply(table, ops);
  for (uint64_t i = 0; i < 64; ++i) {
    const uint64_t x = i * 0x9e3779b97f4a7c15ULL;
    if (i % 2 == 0) {
      EXPECT_THAT(HoldersOf(table, x), IsEmpty()) << i;
    } else {
      EXPECT_THAT(HoldersOf(table, x), ElementsAre(Holder{1, 1, kCpu, 0})) << i;
    }
  }
  EXPECT_EQ(table.Measure().blocks, 32u);
}

TEST(BlockTableTest, TheQueueIsFullAtItsBound) {
  HolderUpdates updates(1);
  for (size_t i = 1; i < HolderUpdates::kMaxPending; ++i) ASSERT_FALSE(updates.Push({i, HolderOp::kAddRef, kGpu}));
  EXPECT_TRUE(updates.Push({0, HolderOp::kAddRef, kGpu}));
}

TEST(BlockTableTest, MeasureCountsBlocksAndTheEmptyShards) {
  BlockTable table(3);  // rounded up to 4
  const BlockTable::Usage empty = table.Measure();
  EXPECT_EQ(empty.blocks, 0u);
  EXPECT_GT(empty.memory_bytes, 0u);
  Worker a(1), b(2);
  a.Apply(table, {{10, HolderOp::kAddRef, kGpu}, {11, HolderOp::kAddRef, kGpu}});
  b.Apply(table, {{10, HolderOp::kAddRef, kGpu}});
  const BlockTable::Usage used = table.Measure();
  EXPECT_EQ(used.blocks, 2u);
  EXPECT_GT(used.memory_bytes, empty.memory_bytes);
}

}  // namespace
}  // namespace kvindex
