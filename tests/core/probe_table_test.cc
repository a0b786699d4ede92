#include "core/probe_table.h"

#include <atomic>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "core/engine_map.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

// Random inserts and erases (small keys collide in probe runs; the table grows
// and shrinks) agree with std::map after every step.
TEST(ProbeTableTest, AgreesWithStdMapThroughGrowthShrinkAndBackwardShifts) {
  ProbeTable<uint64_t> table;
  std::map<uint64_t, uint64_t> ref;
  std::mt19937_64 rng(5);
  for (int step = 0; step < 200000; ++step) {
    // Phases of mostly-insert and mostly-erase make the table grow and shrink.
    const bool grow_phase = (step / 20000) % 2 == 0;
    const uint64_t key = rng() % 5000;
    if (rng() % 100 < (grow_phase ? 70u : 30u)) {
      bool inserted;
      const size_t pos = table.Insert(key, 1, &inserted);
      ASSERT_EQ(inserted, ref.count(key) == 0) << step;
      table.SetValueAt(pos, key * 3 + step);
      ref[key] = key * 3 + step;
    } else {
      const size_t pos = table.Find(key);
      ASSERT_EQ(pos != table.kNpos, ref.count(key) == 1) << step;
      if (pos != table.kNpos) {
        table.EraseAt(pos);
        ref.erase(key);
      }
    }
    ASSERT_EQ(table.size(), ref.size());
    ASSERT_LE(table.size() * 20, table.capacity() * 17 + 20);
    if (step % 997 == 0) {
      for (const auto& [k, v] : ref) {
        const size_t pos = table.Find(k);
        ASSERT_NE(pos, table.kNpos);
        ASSERT_EQ(table.ValueAt(pos), v);
      }
    }
  }
}

TEST(ProbeTableTest, ShrinksWhenMostlyEmpty) {
  ProbeTable<uint64_t> table;
  bool inserted;
  for (uint64_t k = 0; k < 10000; ++k) table.Insert(k, 1, &inserted);
  const size_t big = table.capacity();
  for (uint64_t k = 0; k < 9990; ++k) table.EraseAt(table.Find(k));
  EXPECT_LT(table.capacity(), big / 8);
  for (uint64_t k = 9990; k < 10000; ++k) EXPECT_NE(table.Find(k), table.kNpos);
}

// Prefetch runs without the owner's lock while the table grows, shrinks and
// moves on another thread: no fault, no data race (the TSan suite checks the
// latter), and the table's contents are untouched.
TEST(ProbeTableTest, PrefetchIsSafeWhileAnotherThreadRehashes) {
  ProbeTable<uint64_t> table;
  std::atomic<bool> done{false};
  std::thread prefetcher([&] {
    for (uint64_t k = 0; !done.load(std::memory_order_relaxed); ++k) table.Prefetch(k);
  });
  bool inserted;
  for (int round = 0; round < 20; ++round) {
    for (uint64_t k = 0; k < 5000; ++k) table.Insert(k, 1, &inserted);
    for (uint64_t k = 0; k < 5000; ++k) table.EraseAt(table.Find(k));
    table.Clear();
  }
  for (uint64_t k = 0; k < 100; ++k) table.Insert(k, 1, &inserted);
  done = true;
  prefetcher.join();
  EXPECT_EQ(table.size(), 100u);
  for (uint64_t k = 0; k < 100; ++k) EXPECT_NE(table.Find(k), table.kNpos);
}

TEST(EngineMapTest, EvictOneTakesOnlyBlocksNotStoredSinceTheyWereLookedAt) {
  EngineMap map;
  for (uint64_t e = 1; e <= 8; ++e) map.Put(e, e * 10, 1);
  const EngineMap::Block first = map.EvictOne();  // clears marks until it finds an unmarked block
  EXPECT_EQ(first.index, first.engine * 10);
  // Every survivor but two is stored again (marked): the two are the only candidates.
  const uint64_t cold1 = first.engine == 3 ? 4 : 3;
  const uint64_t cold2 = first.engine == 6 ? 7 : 6;
  for (uint64_t e = 1; e <= 8; ++e) {
    if (e != first.engine && e != cold1 && e != cold2) map.Put(e, e * 10, 1);
  }
  const uint64_t victim = map.EvictOne().engine;
  EXPECT_TRUE(victim == cold1 || victim == cold2) << victim;
  EXPECT_EQ(map.size(), 6u);
  // Keys come back intact (they are stored mixed).
  std::vector<uint64_t> keys;
  map.ForEach([&](const EngineMap::Block& b) { keys.push_back(b.engine); EXPECT_EQ(b.index, b.engine * 10); });
  EXPECT_EQ(keys.size(), 6u);
}

}  // namespace
}  // namespace kvindex
