#include "core/index/internal/holder_table.h"

#include <map>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::vector<Holder> HoldersOf(const HolderTable& table, uint64_t x) {
  HolderTable::Scratch scratch;
  const absl::Span<const Holder> found = table.Find(x, scratch);
  return {found.begin(), found.end()};
}

// Adds one ref of `worker` on medium bits `media` (what the index does per engine block).
void AddRef(HolderTable& table, uint64_t x, uint32_t worker, MediumMask media) {
  table.Update(x, worker, /*create=*/true, [&](Holder& h) {
    ++h.refs;
    h.media |= media;
  });
}

void DropRef(HolderTable& table, uint64_t x, uint32_t worker) {
  table.Update(x, worker, /*create=*/false, [&](Holder& h) { --h.refs; });
}

TEST(HolderTableTest, OneAndTwoHoldersLiveInTheSlotWithoutHeap) {
  HolderTable table;
  AddRef(table, 7, 5, 1);
  EXPECT_THAT(HoldersOf(table, 7), ElementsAre(Holder{5, 1, 1, 0}));
  AddRef(table, 7, 3, 2);
  EXPECT_THAT(HoldersOf(table, 7), ElementsAre(Holder{3, 1, 2, 0}, Holder{5, 1, 1, 0}));
  const size_t slot_only = table.MemoryBytes();  // the table's slots, no heap list
  AddRef(table, 7, 9, 1);  // a third holder needs a list
  EXPECT_GT(table.MemoryBytes(), slot_only);
  EXPECT_THAT(HoldersOf(table, 7), ElementsAre(Holder{3, 1, 2, 0}, Holder{5, 1, 1, 0}, Holder{9, 1, 1, 0}));
  DropRef(table, 7, 5);  // back to two: packed again, the list freed
  EXPECT_EQ(table.MemoryBytes(), slot_only);
  EXPECT_THAT(HoldersOf(table, 7), ElementsAre(Holder{3, 1, 2, 0}, Holder{9, 1, 1, 0}));
  DropRef(table, 7, 3);
  DropRef(table, 7, 9);
  EXPECT_THAT(HoldersOf(table, 7), IsEmpty());
  EXPECT_EQ(table.size(), 0u);
}

TEST(HolderTableTest, PairsWithAliasesOrHugeWorkerIdsUseAList) {
  HolderTable table;
  AddRef(table, 1, 2, 1);
  AddRef(table, 1, 4, 1);
  const size_t slot_only = table.MemoryBytes();
  AddRef(table, 1, 4, 2);  // an alias: refs 2 does not pack
  EXPECT_GT(table.MemoryBytes(), slot_only);
  EXPECT_THAT(HoldersOf(table, 1), ElementsAre(Holder{2, 1, 1, 0}, Holder{4, 2, 3, 0}));
  DropRef(table, 1, 4);
  EXPECT_EQ(table.MemoryBytes(), slot_only);
  EXPECT_THAT(HoldersOf(table, 1), ElementsAre(Holder{2, 1, 1, 0}, Holder{4, 1, 3, 0}));

  const uint32_t huge = (1u << 23) + 5;
  AddRef(table, 2, huge, 4);
  AddRef(table, 2, 1, 1);
  EXPECT_THAT(HoldersOf(table, 2), ElementsAre(Holder{1, 1, 1, 0}, Holder{huge, 1, 4, 0}));
}

// Random adds and drops over few blocks and workers (ids on both sides of the
// pair limit, media on all 7 bits) agree with a map after every step.
TEST(HolderTableTest, ListsOfTheSameHoldersHaveTheSameDigest) {
  HolderTable table;
  // Blocks 1 and 2: workers 0..99 on GPU, added in opposite orders; block 3:
  // the same but worker 50 also on CPU.
  for (uint32_t w = 0; w < 100; ++w) {
    AddRef(table, 1, w, 1);
    AddRef(table, 2, 99 - w, 1);
    AddRef(table, 3, w, w == 50 ? 3 : 1);
  }
  HolderTable::Scratch scratch;
  auto digest_of = [&](uint64_t x) { return HolderTable::ListDigest(table.Find(x, scratch), scratch); };
  const uint64_t d1 = digest_of(1), d2 = digest_of(2), d3 = digest_of(3);
  EXPECT_NE(d1, 0u);
  EXPECT_EQ(d1, d2);
  EXPECT_NE(d1, d3);
  // Packed holders have none: their items are compared.
  AddRef(table, 4, 7, 1);
  EXPECT_EQ(table.Find(4, scratch).size(), 1u);
  EXPECT_EQ(digest_of(4), 0u);
  EXPECT_EQ(digest_of(5), 0u);  // nobody holds it
}

TEST(HolderTableTest, AgreesWithAMapThroughEveryRepresentation) {
  HolderTable table;
  std::map<uint64_t, std::map<uint32_t, Holder>> model;
  std::mt19937_64 rng(42);
  const std::vector<uint32_t> workers = {0, 1, 2, 3, 7, 100, (1u << 23) - 1, 1u << 23, 4000000000u};
  for (int step = 0; step < 200000; ++step) {
    const uint64_t x = rng() % 16;
    const uint32_t worker = workers[rng() % workers.size()];
    auto& holders = model[x];
    if (rng() % 2 == 0) {
      const MediumMask media = static_cast<MediumMask>(1u << (rng() % kMaxMedia));
      AddRef(table, x, worker, media);
      Holder& h = holders.try_emplace(worker, Holder{worker, 0, 0, 0}).first->second;
      ++h.refs;
      h.media |= media;
    } else {
      DropRef(table, x, worker);
      if (auto it = holders.find(worker); it != holders.end() && --it->second.refs == 0) holders.erase(it);
    }
    std::vector<Holder> expected;
    for (const auto& [id, h] : holders) expected.push_back(h);
    ASSERT_EQ(HoldersOf(table, x), expected) << "step " << step;
    // A heap list's digest is kept exact through every update.
    HolderTable::Scratch scratch;
    const absl::Span<const Holder> found = table.Find(x, scratch);
    const uint64_t digest = HolderTable::ListDigest(found, scratch);
    if (found.size() > 2) {
      ASSERT_NE(digest, 0u) << "step " << step;
    }
    if (digest != 0) {
      ASSERT_EQ(digest, HolderTable::Digest(found)) << "step " << step;
    }
  }
  size_t blocks = 0;
  for (const auto& [x, holders] : model) blocks += holders.empty() ? 0 : 1;
  EXPECT_EQ(table.size(), blocks);
}

}  // namespace
}  // namespace kvindex
