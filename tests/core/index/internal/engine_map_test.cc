#include "core/index/internal/engine_map.h"

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"

namespace kvindex {
namespace {

std::optional<uint64_t> Parent(uint64_t engine) { return engine; }

// Second chance: a block stored again since eviction last looked at it
// survives while blocks nobody stored again remain. Random eviction would take
// a hot block in ~10-20 % of these evictions.
TEST(EngineMapTest, EvictOneSparesBlocksStoredAgain) {
  EngineMap map;
  constexpr uint64_t kBlocks = 10000, kHot = 1000;
  for (uint64_t e = 1; e <= kBlocks; ++e) map.Store(e, e * 10, 1, std::nullopt);
  size_t hot_victims = 0;
  for (int round = 0; round < 5000; ++round) {
    for (uint64_t e = 1; e <= kHot; ++e) map.Store(e, e * 10, 1, std::nullopt);  // engine blocks in use
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
  EXPECT_FALSE(map.Store(7, 70, 1, std::nullopt).has_value());
  EXPECT_EQ(map.Store(7, 70, 2, Parent(3))->media, 1);  // same index: media 1|2
  EXPECT_EQ(map.Find(7)->media, 3);
  EXPECT_EQ(map.Find(7)->parent, Parent(3));
  EXPECT_FALSE(map.Remove(7, 4).has_value());  // not on medium 4
  EXPECT_EQ(map.Remove(7, 1)->media, 3);       // as it was
  EXPECT_EQ(map.Find(7)->media, 2);
  EXPECT_EQ(map.Store(7, 71, 1, std::nullopt)->index, 70u);  // another index replaces it
  EXPECT_EQ(map.Find(7)->media, 1);
  EXPECT_EQ(map.Find(7)->parent, std::nullopt);
  EXPECT_EQ(map.Remove(7, 1)->index, 71u);
  EXPECT_FALSE(map.Find(7).has_value());
  EXPECT_EQ(map.size(), 0u);
}

TEST(EngineMapTest, EvictOneFindsEngineHashZero) {  // kept beside the buckets
  EngineMap map;
  map.Store(0, 42, 1, std::nullopt);
  const EngineMap::Block victim = map.EvictOne();
  EXPECT_EQ(victim.engine, 0u);
  EXPECT_EQ(victim.index, 42u);
  EXPECT_EQ(map.size(), 0u);
}

// A chain 1 -> 2 -> ... -> 20 stored at once loses its tail, block by block,
// as an engine frees it: what stays is its first ten blocks, a prefix.
TEST(EngineMapTest, EvictionTakesAChainFromItsTail) {
  EngineMap map;
  for (uint64_t e = 1; e <= 20; ++e) map.Store(e, e * 10, 1, e == 1 ? std::nullopt : Parent(e - 1));
  for (uint64_t expected = 20; expected > 10; --expected) EXPECT_EQ(map.EvictOne().engine, expected);
  for (uint64_t e = 1; e <= 10; ++e) EXPECT_TRUE(map.Find(e).has_value()) << e;
}

// A shared parent goes only after every branch below it: 1 has children 2
// and 3, 2 has 4 (and 5 is a chain of its own).
TEST(EngineMapTest, AParentGoesOnlyAfterAllItsChildren) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    EngineMap map;
    map.Store(1, 10, 1, std::nullopt);
    map.Store(2, 20, 1, Parent(1));
    map.Store(3, 30, 1, Parent(1));
    map.Store(4, 40, 1, Parent(2));
    map.Store(5, 50, 1, std::nullopt);
    for (uint64_t i = 0; i < seed; ++i) map.Store(100 + i, 0, 1, std::nullopt);  // other positions
    std::map<uint64_t, int> when;
    for (int i = 0; map.size() > 0; ++i) when[map.EvictOne().engine] = i;
    EXPECT_LT(when[4], when[2]) << seed;
    EXPECT_LT(when[2], when[1]) << seed;
    EXPECT_LT(when[3], when[1]) << seed;
  }
}

// A child the engine removes leaves its parent a leaf again, and the
// eviction that follows takes it; a child re-stored under another parent
// moves its count.
TEST(EngineMapTest, ChildCountsFollowRemovalsAndNewParents) {
  EngineMap map;
  map.Store(1, 10, 1, std::nullopt);
  map.Store(2, 20, 1, Parent(1));
  map.Store(3, 30, 1, Parent(2));
  map.Store(9, 90, 1, std::nullopt);
  map.Store(4, 40, 1, Parent(9));
  ASSERT_TRUE(map.Remove(3, 1).has_value());  // 2 is a leaf now
  map.Store(4, 40, 1, Parent(2));           // 2 is not, 9 is
  std::vector<uint64_t> order;
  while (map.size() > 0) order.push_back(map.EvictOne().engine);
  auto at = [&order](uint64_t e) { return std::find(order.begin(), order.end(), e) - order.begin(); };
  EXPECT_LT(at(4), at(2));
  EXPECT_LT(at(2), at(1));
}

// A block stored while its parent was absent is not counted, and its
// removal takes nothing off the count of the parent's counted children.
TEST(EngineMapTest, AnUncountedChildLeavesItsParentsCountAlone) {
  EngineMap map;
  map.Store(3, 30, 1, Parent(1));  // 1 is not held: not counted
  map.Store(1, 10, 1, std::nullopt);
  map.Store(2, 20, 1, Parent(1));  // counted
  ASSERT_TRUE(map.Remove(3, 1).has_value());
  EXPECT_EQ(map.EvictOne().engine, 2u);
  EXPECT_EQ(map.EvictOne().engine, 1u);
  // Stored again once its parent is held, a block is counted then.
  map.Store(5, 50, 1, Parent(4));
  map.Store(4, 40, 1, std::nullopt);
  map.Store(5, 50, 2, Parent(4));
  EXPECT_EQ(map.EvictOne().engine, 5u);
  EXPECT_EQ(map.EvictOne().engine, 4u);
}

// Blocks stored before their parents (as an import stores them) are counted
// by RecountChildren; without it the parents would look like leaves.
TEST(EngineMapTest, RecountChildrenCountsLinksStoredInAnyOrder) {
  EngineMap map;
  for (uint64_t e = 10; e >= 1; --e) map.Store(e, e, 1, e == 1 ? std::nullopt : Parent(e - 1));
  map.RecountChildren();
  for (uint64_t expected = 10; expected > 5; --expected) EXPECT_EQ(map.EvictOne().engine, expected);
}

// Parents that form a cycle (not a real engine's) leave no leaf: eviction
// still ends, taking any block.
TEST(EngineMapTest, EvictionEndsWhenNoBlockIsALeaf) {
  EngineMap map;
  map.Store(1, 10, 1, Parent(2));
  map.Store(2, 20, 1, Parent(1));
  map.RecountChildren();
  map.EvictOne();
  EXPECT_EQ(map.size(), 1u);
  map.EvictOne();
  EXPECT_EQ(map.size(), 0u);
}

// Random chains stored, extended and removed by their tails (as engines
// do), with evictions between: no eviction ever takes a block a held block
// names as its parent.
TEST(EngineMapTest, NoEvictionTakesAParentOfAHeldBlock) {
  EngineMap map;
  std::mt19937_64 rng(12);
  std::map<uint64_t, std::optional<uint64_t>> held;  // engine -> parent
  std::vector<uint64_t> tails;                       // chain ends
  uint64_t next = 1;
  auto has_child = [&held](uint64_t e) {
    return std::any_of(held.begin(), held.end(), [e](const auto& kv) { return kv.second == e; });
  };
  for (int step = 0; step < 4000; ++step) {
    const uint64_t r = rng() % 10;
    if (r < 5 || held.empty()) {  // a new chain, or a tail extended
      std::optional<uint64_t> parent;
      if (!tails.empty() && r % 2 == 0) parent = tails[rng() % tails.size()];
      if (parent && !held.contains(*parent)) parent.reset();
      for (int i = 0; i < 4; ++i) {
        map.Store(next, next, 1, parent);
        held[next] = parent;
        parent = next++;
      }
      tails.push_back(*parent);
    } else if (r < 7) {  // the engine removes a leaf
      const uint64_t e = tails[rng() % tails.size()];
      if (held.contains(e) && !has_child(e)) {
        ASSERT_TRUE(map.Remove(e, 1).has_value());
        held.erase(e);
      }
    } else {
      const EngineMap::Block victim = map.EvictOne();
      ASSERT_FALSE(has_child(victim.engine)) << step;
      ASSERT_EQ(held[victim.engine], victim.parent);
      held.erase(victim.engine);
    }
    ASSERT_EQ(map.size(), held.size());
  }
}

// EngineMap's cut: blocks copied in steps between random stores, removals,
// evictions (and a clear, in the second run), settled after each call, give
// exactly the map at the end, parents included: the copies of keys not
// settled, plus each settled key that holds a block.
TEST(EngineMapTest, ACutTakenInStepsIsTheMapAtItsEnd) {
  auto parent_of = [](uint64_t k) { return k % 3 == 0 ? std::nullopt : std::optional<uint64_t>(k / 2); };
  for (bool clear : {false, true}) {
    EngineMap map;
    std::mt19937_64 rng(clear ? 3 : 4);
    for (uint64_t k = 0; k < 20000; ++k) map.Store(k, k * 3, 1, parent_of(k));  // key 0 among them
    map.BeginCut();
    map.SettleCut();
    std::vector<EngineMap::Block> copied;
    bool more = true;
    for (int round = 0; round < 3000; ++round) {
      if (more) more = map.CopyCut(50, [&](const EngineMap::Block& b) { copied.push_back(b); });
      for (int i = 0; i < 20; ++i) {
        const uint64_t k = rng() % 60000;
        switch (rng() % 4) {
          case 0:
          case 1:
            map.Store(k, k * 3 + rng() % 2, static_cast<MediumMask>(1 + rng() % 3),
                      rng() % 2 ? parent_of(k) : parent_of(k + 1));
            break;
          case 2:
            map.Remove(k, static_cast<MediumMask>(1 + rng() % 3));
            break;
          default:
            if (map.size() > 0) map.EvictOne();
        }
      }
      if (clear && round == 1500) map.Clear();
      map.SettleCut();
    }
    while (more) more = map.CopyCut(50, [&](const EngineMap::Block& b) { copied.push_back(b); });
    using Entry = std::tuple<uint64_t, uint64_t, MediumMask, std::optional<uint64_t>>;
    std::set<Entry> truth, cut;
    map.ForEach([&](const EngineMap::Block& b) { truth.emplace(b.engine, b.index, b.media, b.parent); });
    EngineMap::CutResult r = map.EndCut();
    EXPECT_EQ(r.cleared, clear);
    if (!clear) {
      for (const EngineMap::Block& b : copied) {
        if (r.settled.contains(b.engine)) continue;
        EXPECT_TRUE(cut.emplace(b.engine, b.index, b.media, b.parent).second) << b.engine;
      }
    }
    for (const auto& [engine, block] : r.settled) {
      if (!block.has_value()) continue;
      EXPECT_TRUE(cut.emplace(engine, block->index, block->media, block->parent).second) << engine;
    }
    EXPECT_EQ(cut, truth) << (clear ? "with a clear" : "without a clear");
    EXPECT_GT(truth.size(), 5000u);
  }
}

}  // namespace
}  // namespace kvindex
