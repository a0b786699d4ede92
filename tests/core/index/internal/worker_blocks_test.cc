#include "core/index/internal/worker_blocks.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
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

// Batch i of the racing test: 12 new blocks (the prompt's blocks 12i..12i+11
// of one long prompt, so each chains to the one before), some on CPU, older
// ones removed, a clear at batch 900.
EventBatch RacingBatch(uint64_t i) {
  EventBatch batch;
  batch.ts = static_cast<double>(i);
  if (i == 900) batch.events.push_back(AllBlocksCleared{});
  BlockStored s;
  s.block_size = kBlockSize;
  if (i % 50 != 0) s.parent_block_hash = 1000 + 12 * i - 1;
  for (uint64_t j = 0; j < 12; ++j) {
    s.block_hashes.push_back(1000 + 12 * i + j);
    s.token_ids.push_back(static_cast<uint32_t>(i));
    s.token_ids.push_back(static_cast<uint32_t>(j));
  }
  if (i % 3 == 0) s.medium = "CPU";
  batch.events.push_back(std::move(s));
  if (i >= 20 && i % 2 == 0) {
    BlockRemoved gone;
    for (uint64_t j = 0; j < 12; j += 2) gone.block_hashes.push_back(1000 + 12 * (i - 20) + j);
    batch.events.push_back(std::move(gone));
  }
  return batch;
}

// (engine, index, tier names) of every block of `s`, sorted.
std::vector<std::tuple<uint64_t, uint64_t, std::string>> BlocksOf(const WorkerSnapshot& s) {
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> out;
  for (const GroupSnapshot& g : s.groups) {
    for (const SnapshotBlock& b : g.blocks) {
      std::string tiers;
      for (int bit = 0; bit < kSnapshotMedia; ++bit) {
        if (b.media >> bit & 1) tiers += s.media[bit] + ",";
      }
      out.emplace_back(b.engine, b.index, tiers);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Exports in steps of 16 table positions (hundreds of holds each) while
// another thread applies batches: each is exactly the worker right after the
// batch of its cursor (a fresh worker that applied the same batches up to it).
TEST_F(WorkerBlocksTest, AnExportInSmallStepsRacingApplyIsTheWorkerAtItsCursor) {
  constexpr uint64_t kBatches = 1500;
  for (uint64_t i = 0; i < 300; ++i) (void)worker_.Apply(kModel, RacingBatch(i), 0, BatchCursor{i, i, true});
  std::atomic<uint64_t> applied{300};
  std::thread ingest([&] {
    for (uint64_t i = 300; i < kBatches; ++i) {
      (void)worker_.Apply(kModel, RacingBatch(i), 0, BatchCursor{i, i, true});
      applied = i + 1;
    }
  });
  // An export, then another once 40 more batches are in (back-to-back
  // exports of a small worker would keep its lock from Apply).
  std::vector<WorkerSnapshot> exports;
  uint32_t most_holds = 0;
  for (uint64_t at = applied.load(); at < kBatches; at = applied.load()) {
    ExportPause pause;
    exports.push_back(worker_.Export(&pause, ExportSteps{.positions = 16}));
    most_holds = std::max(most_holds, pause.holds);
    while (applied.load() < std::min(at + 40, kBatches)) std::this_thread::yield();
  }
  EXPECT_GT(most_holds, 100u);
  ingest.join();
  for (const WorkerSnapshot& s : exports) {
    ASSERT_TRUE(s.cursor.has_value());
    MediumTable media;
    BlockTable table{4};
    ContextRegistry contexts;
    IndexCounters counters;
    WorkerBlocks replay{7, {"ns/a", 0}, {table, contexts, media, counters}};
    for (uint64_t i = 0; i <= s.cursor->seq; ++i) (void)replay.Apply(kModel, RacingBatch(i), 0, BatchCursor{i, i, true});
    const WorkerSnapshot truth = replay.Export();
    EXPECT_EQ(BlocksOf(s), BlocksOf(truth)) << "at seq " << s.cursor->seq;
    EXPECT_EQ(s.cursor, truth.cursor);
    EXPECT_EQ(s.last_event_ts, truth.last_event_ts);
  }
}

TEST_F(WorkerBlocksTest, ARemovedWorkerExportsWithoutACursor) {
  (void)worker_.Apply(kModel, Stored({11, 12}), 0, BatchCursor{4, 40, true});
  EXPECT_EQ(worker_.Export().cursor, (BatchCursor{4, 40, true}));
  worker_.Remove();
  EXPECT_EQ(worker_.Export().cursor, std::nullopt);
}

}  // namespace
}  // namespace kvindex
