#include "core/index/internal/worker_blocks.h"

#include <optional>
#include <string>
#include <vector>

#include "core/index/block_hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

constexpr uint32_t kBlockSize = 2;
const WorkerContext kModel{"llama", ""};

// Tokens 1..n.
std::vector<uint32_t> Tokens(uint32_t n) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = i + 1;
  return t;
}

// A prompt's first `hashes.size()` blocks (tokens 1..), stored on `medium`.
EventBatch Stored(std::vector<uint64_t> hashes, std::optional<std::string> medium = std::nullopt) {
  BlockStored s;
  s.token_ids = Tokens(static_cast<uint32_t>(hashes.size()) * kBlockSize);
  s.block_hashes = std::move(hashes);
  s.block_size = kBlockSize;
  s.medium = std::move(medium);
  EventBatch batch;
  batch.ts = 5;
  batch.events.push_back(std::move(s));
  return batch;
}

EventBatch Removed(std::vector<uint64_t> hashes, std::optional<std::string> medium = std::nullopt) {
  EventBatch batch;
  batch.events.push_back(BlockRemoved{std::move(hashes), std::move(medium)});
  return batch;
}

// Index hash of block i of the prompt Stored() sends.
uint64_t X(size_t i) {
  const std::vector<uint32_t> tokens = Tokens(static_cast<uint32_t>(i + 1) * kBlockSize);
  return HashPrefix(ContextSeed("llama", "", kBlockSize), tokens, kBlockSize)[i];
}

class WorkerBlocksTest : public ::testing::Test {
 protected:
  std::vector<Holder> HoldersOf(uint64_t x) const {
    HolderTable::Scratch scratch;
    return table_.WithHolders(x, scratch, [](absl::Span<const Holder> h) { return std::vector<Holder>(h.begin(), h.end()); });
  }

  MediumTable media_;
  BlockTable table_{4};
  ContextRegistry contexts_;
  IndexCounters counters_;
  WorkerBlocks worker_{7, {"ns/a", 0}, {table_, contexts_, media_, counters_}};
};

TEST_F(WorkerBlocksTest, StoredBlocksReachTheTableTheRegistryAndTheCounts) {
  const ApplyResult r = worker_.Apply(kModel, Stored({11, 12}), /*max_blocks=*/0);
  EXPECT_EQ(r.blocks_stored, 2u);
  EXPECT_THAT(worker_.EngineHashes(), UnorderedElementsAre(11u, 12u));
  EXPECT_EQ(worker_.live(), 2u);
  EXPECT_EQ(worker_.block_size(), kBlockSize);
  EXPECT_EQ(counters_.entries.load(), 2u);
  EXPECT_THAT(HoldersOf(X(0)), ElementsAre(Holder{HolderId(7, 0), 1, 1, 0}));
  EXPECT_THAT(HoldersOf(X(1)), ElementsAre(Holder{HolderId(7, 0), 1, 1, 0}));
  EXPECT_THAT(contexts_.BlockSizes("llama", ""), ElementsAre(kBlockSize));
  const WorkerStats s = worker_.Stats();
  EXPECT_EQ(s.worker, (WorkerKey{"ns/a", 0}));
  EXPECT_EQ(s.model, "llama");
  EXPECT_EQ(s.blocks, 2u);
  EXPECT_THAT(s.blocks_by_medium, ElementsAre(Pair("GPU", 2u)));
  EXPECT_EQ(s.last_event_ts, 5);
}

// Two engine blocks with the same content map to one index block: the holder
// counts both, on the union of their media, until the last goes.
TEST_F(WorkerBlocksTest, AliasesShareOneHolder) {
  ASSERT_EQ(worker_.Apply(kModel, Stored({11}), 0).blocks_stored, 1u);
  ASSERT_EQ(worker_.Apply(kModel, Stored({21}, "CPU"), 0).blocks_stored, 1u);
  const MediumMask gpu = 1, cpu = 2;
  EXPECT_THAT(HoldersOf(X(0)), ElementsAre(Holder{HolderId(7, 0), 2, static_cast<MediumMask>(gpu | cpu), 0}));
  ASSERT_EQ(worker_.Apply(kModel, Removed({21}, "CPU"), 0).blocks_removed, 1u);
  EXPECT_THAT(HoldersOf(X(0)), ElementsAre(Holder{HolderId(7, 0), 1, gpu, 0}));
  ASSERT_EQ(worker_.Apply(kModel, Removed({11}), 0).blocks_removed, 1u);
  EXPECT_THAT(HoldersOf(X(0)), IsEmpty());
  EXPECT_EQ(counters_.entries.load(), 0u);
}

TEST_F(WorkerBlocksTest, TheWorkersCapEvictsAsItApplies) {
  const ApplyResult r = worker_.Apply(kModel, Stored({11, 12, 13}), /*max_blocks=*/2);
  EXPECT_EQ(r.blocks_stored, 3u);
  EXPECT_EQ(r.evictions, 1u);
  EXPECT_EQ(worker_.live(), 2u);
  EXPECT_EQ(worker_.Stats().evictions, 1u);
  EXPECT_EQ(counters_.entries.load(), 2u);
  EXPECT_EQ(counters_.evictions.load(), 1u);
}

TEST_F(WorkerBlocksTest, EvictOverCapEvictsTheExcessAtMostSoMany) {
  ASSERT_EQ(worker_.Apply(kModel, Stored({11, 12, 13, 14, 15}), 0).blocks_stored, 5u);
  worker_.EvictOverCap(/*max_entries=*/4, /*at_most=*/64);
  EXPECT_EQ(worker_.live(), 4u);
  worker_.EvictOverCap(/*max_entries=*/0, /*at_most=*/2);
  EXPECT_EQ(worker_.live(), 2u);
  worker_.EvictOverCap(/*max_entries=*/10, /*at_most=*/2);  // under the cap
  EXPECT_EQ(worker_.live(), 2u);
  EXPECT_EQ(counters_.entries.load(), 2u);
  EXPECT_EQ(counters_.evictions.load(), 3u);
}

TEST_F(WorkerBlocksTest, ClearKeepsTheWorkerUsable) {
  ASSERT_EQ(worker_.Apply(kModel, Stored({11, 12}), 0).blocks_stored, 2u);
  worker_.Clear();
  EXPECT_THAT(worker_.EngineHashes(), IsEmpty());
  EXPECT_THAT(HoldersOf(X(0)), IsEmpty());
  EXPECT_EQ(counters_.entries.load(), 0u);
  EXPECT_THAT(contexts_.BlockSizes("llama", ""), ElementsAre(kBlockSize));  // still its context
  EXPECT_EQ(worker_.Apply(kModel, Stored({11}), 0).blocks_stored, 1u);
}

TEST_F(WorkerBlocksTest, ARemovedWorkerReleasesEverythingAndAppliesNothing) {
  ASSERT_EQ(worker_.Apply(kModel, Stored({11, 12}), 0).blocks_stored, 2u);
  worker_.Remove();
  EXPECT_THAT(HoldersOf(X(0)), IsEmpty());
  EXPECT_THAT(contexts_.BlockSizes("llama", ""), IsEmpty());
  EXPECT_EQ(counters_.entries.load(), 0u);
  const ApplyResult r = worker_.Apply(kModel, Stored({11}), 0);
  EXPECT_TRUE(r.worker_removed);
  EXPECT_EQ(r.blocks_stored, 0u);
  EXPECT_THAT(worker_.EngineHashes(), IsEmpty());
}

TEST_F(WorkerBlocksTest, MemoryBytesCountTheEngineMap) {
  const size_t empty = worker_.MemoryBytes();
  EXPECT_GE(empty, sizeof(WorkerBlocks));
  std::vector<uint64_t> hashes(64);
  for (size_t i = 0; i < hashes.size(); ++i) hashes[i] = 100 + i;
  ASSERT_EQ(worker_.Apply(kModel, Stored(hashes), 0).blocks_stored, 64u);
  EXPECT_GT(worker_.MemoryBytes(), empty);
}

}  // namespace
}  // namespace kvindex
