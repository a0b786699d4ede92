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

#include "gtest/gtest.h"

namespace kvindex {
namespace {

// Random inserts and erases (small keys, key 0 among them; the table grows
// and shrinks, entries move along cuckoo paths) agree with std::map after
// every step, tags included.
TEST(BucketTableTest, AgreesWithStdMapThroughGrowthShrinkAndMoves) {
  BucketTable<uint8_t> table;
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
  BucketTable<NoTag> table;
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
  BucketTable<NoTag> table;
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
  BucketTable<NoTag> table;
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
  BucketTable<uint8_t> table;
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

// Growth in every form keeps every entry with its value and tag: from the
// heap into a mapping, in place within the mapping's reservation (the tags
// moving to a new array while they are small, extended in place once they
// are mapped too), into a fresh mapping when the reservation is used up, and
// the entries that do not fit beside their old bucket placed by searches.
TEST(BucketTableTest, GrowingKeepsEveryEntryWithItsValueAndTag) {
  BucketTable<uint16_t> table;
  std::mt19937_64 rng(17);
  std::vector<uint64_t> keys;
  size_t capacity = 0, growths = 0;
  for (uint64_t i = 0; i < 300000; ++i) {
    const uint64_t key = rng();
    bool inserted;
    const size_t pos = table.Insert(key, &inserted);
    ASSERT_TRUE(inserted);
    table.SetValueAt(pos, ~key);
    table.SetTagAt(pos, static_cast<uint16_t>(key | 1));
    keys.push_back(key);
    if (table.capacity() == capacity) continue;
    capacity = table.capacity();
    ++growths;
    for (const uint64_t k : keys) {
      const size_t at = table.Find(k);
      ASSERT_NE(at, table.kNpos) << "after growth " << growths;
      ASSERT_EQ(table.ValueAt(at), ~k);
      ASSERT_EQ(table.TagAt(at), static_cast<uint16_t>(k | 1));
    }
  }
  EXPECT_GT(growths, 40u);
  size_t seen = 0;
  table.ForEach([&](uint64_t k, uint64_t v, uint16_t) {
    ++seen;
    ASSERT_EQ(v, ~k);
  });
  EXPECT_EQ(seen, keys.size());
}

// Reserve(n) grows once: inserting n entries afterwards never grows the table again.
TEST(BucketTableTest, ReserveSizesTheTableForItsEntriesAtOnce) {
  BucketTable<uint8_t> table;
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
  BucketTable<uint8_t> table;
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

}  // namespace
}  // namespace kvindex
