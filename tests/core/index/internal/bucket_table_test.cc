#include "core/index/internal/bucket_table.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <tuple>
#include <thread>
#include <vector>

#include "core/index/internal/engine_map.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

// Random inserts and erases (small keys, key 0 among them; the table grows
// and shrinks, entries move along cuckoo paths) agree with std::map after
// every step, tags included.
TEST(BucketTableTest, AgreesWithStdMapThroughGrowthShrinkAndMoves) {
  BucketTable<true> table;
  std::map<uint64_t, std::pair<uint64_t, uint8_t>> ref;
  std::mt19937_64 rng(5);
  for (int step = 0; step < 200000; ++step) {
    // Phases of mostly-insert and mostly-erase make the table grow and shrink.
    const bool grow_phase = (step / 20000) % 2 == 0;
    const uint64_t key = rng() % 5000;
    if (rng() % 100 < (grow_phase ? 70u : 30u)) {
      bool inserted;
      const size_t pos = table.Insert(key, &inserted);
      ASSERT_EQ(inserted, ref.count(key) == 0) << step;
      if (inserted) {
        ASSERT_EQ(table.ValueAt(pos), 0u);
        ASSERT_EQ(table.TagAt(pos), 0u);
      }
      const uint8_t tag = static_cast<uint8_t>(step | 1);
      table.SetValueAt(pos, key * 3 + step);
      table.SetTagAt(pos, tag);
      ref[key] = {key * 3 + step, tag};
    } else {
      const size_t pos = table.Find(key);
      ASSERT_EQ(pos != table.kNpos, ref.count(key) == 1) << step;
      if (pos != table.kNpos) {
        ASSERT_EQ(table.KeyAt(pos), key);
        table.EraseAt(pos);
        ref.erase(key);
      }
    }
    ASSERT_EQ(table.size(), ref.size());
    ASSERT_LE(table.size() * 20, table.capacity() * 19 + 20);
    if (step % 997 == 0) {
      for (const auto& [k, v] : ref) {
        const size_t pos = table.Find(k);
        ASSERT_NE(pos, table.kNpos);
        ASSERT_EQ(table.ValueAt(pos), v.first);
        ASSERT_EQ(table.TagAt(pos), v.second);
      }
      size_t seen = 0;
      table.ForEach([&](uint64_t k, uint64_t v, uint8_t tag) {
        ++seen;
        ASSERT_EQ(ref.at(k), std::make_pair(v, tag));
      });
      ASSERT_EQ(seen, ref.size());
    }
  }
}

// The table runs up to 0.95 full before it grows (cuckoo paths free slots in
// full buckets), and grows by ~20 %: its load never falls far.
TEST(BucketTableTest, FillsTo95PercentAndGrowsInSmallSteps) {
  BucketTable<false> table;
  bool inserted;
  double highest = 0, lowest_after_growth = 1;
  size_t capacity = 0;
  for (uint64_t k = 1; k <= 200000; ++k) {
    table.Insert(k * 0x9e3779b97f4a7c15ULL, &inserted);
    ASSERT_TRUE(inserted);
    const double load = double(table.size()) / double(table.capacity());
    if (table.capacity() != capacity) {
      if (capacity > 1000) {
        EXPECT_LE(table.capacity(), capacity * 6 / 5 + 4);
        lowest_after_growth = std::min(lowest_after_growth, load);
      }
      capacity = table.capacity();
    }
    if (table.capacity() > 1000) highest = std::max(highest, load);
  }
  EXPECT_GT(highest, 0.94);
  EXPECT_GT(lowest_after_growth, 0.78);
  for (uint64_t k = 1; k <= 200000; ++k) ASSERT_NE(table.Find(k * 0x9e3779b97f4a7c15ULL), table.kNpos);
}

TEST(BucketTableTest, EraseMovesNoOtherEntry) {
  BucketTable<false> table;
  bool inserted;
  for (uint64_t k = 0; k < 1000; ++k) table.SetValueAt(table.Insert(k, &inserted), k + 7);
  std::map<uint64_t, size_t> where;
  for (uint64_t k = 0; k < 1000; ++k) where[k] = table.Find(k);
  for (uint64_t k = 0; k < 1000; k += 3) {
    table.EraseAt(where[k]);
    where.erase(k);
  }
  for (const auto& [k, pos] : where) {
    ASSERT_EQ(table.Find(k), pos);
    ASSERT_EQ(table.KeyAt(pos), k);
    ASSERT_EQ(table.ValueAt(pos), k + 7);
  }
}

TEST(BucketTableTest, ShrinksWhenMostlyEmpty) {
  BucketTable<false> table;
  bool inserted;
  for (uint64_t k = 0; k < 10000; ++k) table.Insert(k, &inserted);
  const size_t big = table.capacity();
  for (uint64_t k = 0; k < 9990; ++k) table.EraseAt(table.Find(k));
  EXPECT_LT(table.capacity(), big / 8);
  for (uint64_t k = 9990; k < 10000; ++k) EXPECT_NE(table.Find(k), table.kNpos);
}

// Prefetch runs without the owner's lock while the table grows, shrinks and
// moves on another thread: no fault, no data race (the TSan suite checks the
// latter), and the table's contents are untouched.
TEST(BucketTableTest, PrefetchIsSafeWhileAnotherThreadRehashes) {
  BucketTable<true> table;
  std::atomic<bool> done{false};
  std::thread prefetcher([&] {
    for (uint64_t k = 0; !done.load(std::memory_order_relaxed); ++k) table.Prefetch(k);
  });
  bool inserted;
  for (int round = 0; round < 20; ++round) {
    for (uint64_t k = 0; k < 5000; ++k) table.Insert(k, &inserted);
    for (uint64_t k = 0; k < 5000; ++k) table.EraseAt(table.Find(k));
    table.Clear();
  }
  for (uint64_t k = 0; k < 100; ++k) table.Insert(k, &inserted);
  done = true;
  prefetcher.join();
  EXPECT_EQ(table.size(), 100u);
  for (uint64_t k = 0; k < 100; ++k) EXPECT_NE(table.Find(k), table.kNpos);
}

// Second chance: a block stored again since eviction last looked at it
// survives while blocks nobody stored again remain. Random eviction would take
// a hot block in ~10-20 % of these evictions.
TEST(EngineMapTest, EvictOneSparesBlocksStoredAgain) {
  EngineMap map;
  constexpr uint64_t kBlocks = 10000, kHot = 1000;
  for (uint64_t e = 1; e <= kBlocks; ++e) map.Store(e, e * 10, 1);
  size_t hot_victims = 0;
  for (int round = 0; round < 5000; ++round) {
    for (uint64_t e = 1; e <= kHot; ++e) map.Store(e, e * 10, 1);  // engine blocks in use
    const EngineMap::Block victim = map.EvictOne();
    EXPECT_EQ(victim.index, victim.engine * 10);
    hot_victims += victim.engine <= kHot;
  }
  EXPECT_LT(hot_victims, 50u);
  EXPECT_GE(map.size(), kBlocks - 5000);  // a hot victim comes back with the next round's stores
  EXPECT_LE(map.size(), kBlocks - 5000 + hot_victims);
  // Keys come back intact (they are stored mixed).
  size_t seen = 0;
  map.ForEach([&](const EngineMap::Block& b) {
    ++seen;
    EXPECT_EQ(b.index, b.engine * 10);
  });
  EXPECT_EQ(seen, map.size());
}

TEST(EngineMapTest, StoreKeepsTheUnionOfMediaAndRemoveTakesOneMedium) {
  EngineMap map;
  EXPECT_FALSE(map.Store(7, 70, 1).has_value());
  EXPECT_EQ(map.Store(7, 70, 2)->media, 1);   // same index: media 1|2
  EXPECT_EQ(map.Find(7)->media, 3);
  EXPECT_FALSE(map.Remove(7, 4).has_value());  // not on medium 4
  EXPECT_EQ(map.Remove(7, 1)->media, 3);       // as it was
  EXPECT_EQ(map.Find(7)->media, 2);
  EXPECT_EQ(map.Store(7, 71, 1)->index, 70u);  // another index replaces it
  EXPECT_EQ(map.Find(7)->media, 1);
  EXPECT_EQ(map.Remove(7, 1)->index, 71u);
  EXPECT_FALSE(map.Find(7).has_value());
  EXPECT_EQ(map.size(), 0u);
}

TEST(EngineMapTest, EvictOneFindsEngineHashZero) {  // kept beside the buckets
  EngineMap map;
  map.Store(0, 42, 1);
  const EngineMap::Block victim = map.EvictOne();
  EXPECT_EQ(victim.engine, 0u);
  EXPECT_EQ(victim.index, 42u);
  EXPECT_EQ(map.size(), 0u);
}

// Reserve(n) grows once: inserting n entries afterwards never grows the table again.
TEST(BucketTableTest, ReserveSizesTheTableForItsEntriesAtOnce) {
  BucketTable<true> table;
  table.Reserve(100000);
  const size_t capacity = table.capacity();
  EXPECT_GE(capacity, 100000u);
  for (uint64_t k = 0; k < 100000; ++k) {
    bool inserted;
    table.Insert(k * 7919, &inserted);
  }
  EXPECT_EQ(table.capacity(), capacity);
  EXPECT_EQ(table.size(), 100000u);
  table.Reserve(10);  // never shrinks
  EXPECT_EQ(table.capacity(), capacity);
}

// A pin (a copy taken in steps): every entry present at Pin() that is neither
// erased, overwritten nor moved afterwards is reported by ForEachPinned
// exactly once, with its value as of Pin(), while the table grows (its arrays
// left and kept), moves entries along cuckoo paths (logged), shrinks and is
// cleared; nothing else reported but entries inserted or moved since (logged
// or ours).
TEST(BucketTableTest, APinnedViewKeepsEveryUntouchedEntryThroughGrowthShrinkAndClear) {
  BucketTable<true> table;
  std::map<uint64_t, uint64_t> at_pin;
  for (uint64_t k = 1; k <= 5000; ++k) {
    bool inserted;
    const size_t pos = table.Insert(k, &inserted);
    table.SetValueAt(pos, k * 7);
    table.SetTagAt(pos, 1);
    at_pin[k] = k * 7;
  }
  std::vector<uint64_t> moved;
  table.Pin(&moved);
  std::set<uint64_t> touched;  // erased or overwritten by us
  std::map<uint64_t, int> reported;
  std::map<uint64_t, uint64_t> values;
  size_t next = 0;
  auto step = [&] {
    const size_t to = std::min(table.PinnedEnd(), next + 100);
    table.ForEachPinned(next, to, [&](uint64_t k, uint64_t v, uint8_t) {
      ++reported[k];
      values[k] = v;
    });
    next = to;
  };
  std::mt19937_64 rng(9);
  for (int round = 0; round < 400; ++round) {
    step();
    for (int i = 0; i < 100; ++i) {  // growth: new keys (moves, rehashes)
      bool inserted;
      table.Insert(100000 + round * 100 + i, &inserted);
    }
    const uint64_t k = 1 + rng() % 5000;  // an erase and an overwrite of old keys
    if (const size_t pos = table.Find(k); pos != table.kNpos) table.EraseAt(pos);
    touched.insert(k);
    const uint64_t o = 1 + rng() % 5000;
    if (const size_t pos = table.Find(o); pos != table.kNpos) table.SetValueAt(pos, 1);
    touched.insert(o);
  }
  for (uint64_t k = 100000; k < 100000 + 40000; ++k) {  // shrink
    if (const size_t pos = table.Find(k); pos != table.kNpos) table.EraseAt(pos);
  }
  step();
  table.Clear();
  while (next < table.PinnedEnd()) step();
  const std::set<uint64_t> logged(moved.begin(), moved.end());
  size_t untouched = 0;
  for (const auto& [k, v] : at_pin) {
    if (touched.count(k) || logged.count(k)) continue;
    ++untouched;
    ASSERT_EQ(reported[k], 1) << k;
    EXPECT_EQ(values[k], v) << k;
  }
  EXPECT_GT(untouched, 3000u);
  EXPECT_FALSE(moved.empty());  // the growth moved old entries along cuckoo paths
  for (const auto& [k, n] : reported) {
    EXPECT_TRUE(at_pin.count(k) || k >= 100000 || logged.count(k)) << k;
  }
  table.Unpin();
}

// EngineMap's cut: blocks copied in steps between random stores, removals,
// evictions (and a clear, in the second run), settled after each call, give
// exactly the map at the end: the copies of keys not settled, plus each
// settled key that holds a block, with the owner's value attached.
TEST(EngineMapTest, ACutTakenInStepsIsTheMapAtItsEnd) {
  for (bool clear : {false, true}) {
    EngineMap map;
    std::mt19937_64 rng(clear ? 3 : 4);
    for (uint64_t k = 0; k < 20000; ++k) map.Store(k, k * 3, 1);  // key 0 among them
    map.BeginCut();
    map.SettleCut([](uint64_t e) { return std::optional<uint64_t>(e * 2); });
    std::vector<EngineMap::Block> copied;
    bool more = true;
    for (int round = 0; round < 3000; ++round) {
      if (more) more = map.CopyCut(50, [&](const EngineMap::Block& b) { copied.push_back(b); });
      for (int i = 0; i < 20; ++i) {
        const uint64_t k = rng() % 60000;
        switch (rng() % 4) {
          case 0:
          case 1:
            map.Store(k, k * 3 + rng() % 2, static_cast<MediumMask>(1 + rng() % 3));
            break;
          case 2:
            map.Remove(k, static_cast<MediumMask>(1 + rng() % 3));
            break;
          default:
            if (map.size() > 0) map.EvictOne();
        }
      }
      if (clear && round == 1500) map.Clear();
      map.SettleCut([](uint64_t e) { return std::optional<uint64_t>(e * 2); });
    }
    while (more) more = map.CopyCut(50, [&](const EngineMap::Block& b) { copied.push_back(b); });
    std::set<std::tuple<uint64_t, uint64_t, MediumMask>> truth, cut;
    map.ForEach([&](const EngineMap::Block& b) { truth.emplace(b.engine, b.index, b.media); });
    EngineMap::CutResult r = map.EndCut();
    EXPECT_EQ(r.cleared, clear);
    if (!clear) {
      for (const EngineMap::Block& b : copied) {
        if (r.settled.contains(b.engine)) continue;
        EXPECT_TRUE(cut.emplace(b.engine, b.index, b.media).second) << b.engine;
      }
    }
    for (const auto& [engine, settled] : r.settled) {
      if (!settled.block.has_value()) continue;
      EXPECT_EQ(settled.attached, std::optional<uint64_t>(engine * 2));
      EXPECT_TRUE(cut.emplace(engine, settled.block->index, settled.block->media).second) << engine;
    }
    EXPECT_EQ(cut, truth) << (clear ? "with a clear" : "without a clear");
    EXPECT_GT(truth.size(), 5000u);
  }
}

}  // namespace
}  // namespace kvindex
