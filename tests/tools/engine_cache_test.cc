#include "tools/sim/engine_cache.h"

#include <numeric>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "core/index/block_hash.h"
#include "core/index/prefix_index.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/tools/engine_cache_testing.h"
#include "tools/sim/engine_hash.h"
#include "tools/sim/ground_truth.h"
#include "tools/sim/workload.h"

namespace kvindex::sim {
namespace {

using ::testing::ElementsAre;
using ::testing::Optional;
using ::testing::Pair;
using ::testing::SizeIs;

// Engine hashes of a prompt's full blocks.
std::vector<uint64_t> Chain(uint64_t salt, const std::vector<uint32_t>& tokens, uint32_t bs) {
  std::vector<uint64_t> out;
  uint64_t parent = salt;
  for (size_t i = 0; i + bs <= tokens.size(); i += bs) {
    parent = EngineBlockHash(parent, absl::MakeConstSpan(tokens).subspan(i, bs));
    out.push_back(parent);
  }
  return out;
}

const BlockStored& AsStored(const Event& e) { return std::get<BlockStored>(e); }
const BlockRemoved& AsRemoved(const Event& e) { return std::get<BlockRemoved>(e); }

TEST(EngineCacheTest, StoresFullBlocksAsOneChainedEventAndReusesThem) {
  EngineCache cache(Options(4, 100));
  const auto a = Seq(10, 1);  // 2 full blocks + 2 tokens
  const auto h = Chain(42, a, 4);
  std::vector<Event> events;
  EXPECT_EQ(cache.Serve(a, &events), 0u);
  ASSERT_THAT(events, SizeIs(1));
  const BlockStored& s = AsStored(events[0]);
  EXPECT_EQ(s.block_hashes, h);
  EXPECT_EQ(s.parent_block_hash, std::nullopt);
  EXPECT_EQ(s.token_ids, Seq(8, 1));
  EXPECT_EQ(s.block_size, 4u);
  EXPECT_THAT(s.medium, Optional(std::string("GPU")));
  EXPECT_EQ(s.lora_name, std::nullopt);

  events.clear();
  EXPECT_EQ(cache.Serve(a, &events), 2u);
  EXPECT_THAT(events, SizeIs(0));

  // An extension stores only its new blocks, chained from the last cached one.
  auto longer = Seq(8, 1);
  for (uint32_t t : Seq(8, 100)) longer.push_back(t);
  EXPECT_EQ(cache.Serve(longer, &events), 2u);
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_THAT(AsStored(events[0]).parent_block_hash, Optional(h[1]));
  const auto hl = Chain(42, longer, 4);
  EXPECT_EQ(AsStored(events[0]).block_hashes, std::vector<uint64_t>(hl.begin() + 2, hl.end()));
  EXPECT_EQ(cache.blocks(), 4u);
  EXPECT_EQ(cache.CachedPrefixBlocks(longer), 4u);
}

TEST(EngineCacheTest, EngineHashesAreSaltedAndGroundTruthUsesIndexHashes) {
  EngineCacheOptions other = Options(4, 100);
  other.salt = 43;
  EngineCache a(Options(4, 100)), b(other);
  std::vector<Event> ea, eb;
  const auto tokens = Seq(12, 5);
  a.Serve(tokens, &ea);
  b.Serve(tokens, &eb);
  EXPECT_NE(AsStored(ea[0]).block_hashes, AsStored(eb[0]).block_hashes);

  const auto index = HashPrefix(ContextSeed("m", "", 4), tokens, 4);
  std::vector<uint64_t> truth;
  for (const HeldBlock& hb : a.Snapshot()) truth.push_back(hb.index_hash);
  EXPECT_EQ(truth, index);
  EXPECT_THAT(LeafChains(a.Snapshot()), ElementsAre(index));
  EXPECT_EQ(a.Snapshot()[1].parent_index_hash, index[0]);
  EXPECT_NE(AsStored(ea[0]).block_hashes, index);
}

TEST(EngineCacheTest, LoraNameTravelsWithStoredBlocksAndSeedsTheIndexHash) {
  EngineCacheOptions o = Options(2, 10);
  o.lora_name = "sql";
  EngineCache cache(o);
  std::vector<Event> events;
  cache.Serve(Seq(4, 1), &events);
  EXPECT_THAT(AsStored(events[0]).lora_name, Optional(std::string("sql")));
  EXPECT_THAT(AsStored(events[0]).lora_id, Optional(1));
  EXPECT_EQ(cache.Snapshot()[0].index_hash, HashPrefix(ContextSeed("m", "sql", 2), Seq(4, 1), 2)[0]);
}

TEST(EngineCacheTest, LruEvictsLeastRecentlyUsedLeavesFirst) {
  EngineCache cache(Options(2, 4));
  const auto a = Seq(4, 1), b = Seq(4, 10), c = Seq(4, 20);
  const auto ha = Chain(42, a, 2), hb = Chain(42, b, 2), hc = Chain(42, c, 2);
  std::vector<Event> events;
  cache.Serve(a, &events);
  cache.Serve(b, &events);
  cache.Serve(a, &events);  // a is now more recent than b
  events.clear();
  cache.Serve(c, &events);
  // b's leaf goes before its root; one event per run of removals.
  ASSERT_THAT(events, SizeIs(2));
  EXPECT_EQ(AsRemoved(events[0]).block_hashes, std::vector<uint64_t>({hb[1], hb[0]}));
  EXPECT_THAT(AsRemoved(events[0]).medium, Optional(std::string("GPU")));
  EXPECT_EQ(AsStored(events[1]).block_hashes, hc);
  EXPECT_EQ(cache.gpu_blocks(), 4u);
  EXPECT_EQ(cache.CachedPrefixBlocks(a), 2u);
  EXPECT_EQ(cache.CachedPrefixBlocks(b), 0u);
  EXPECT_EQ(cache.counters().removed_gpu, 2u);
}

TEST(EngineCacheTest, OneRemovalPerEventWhenAsked) {
  EngineCacheOptions o = Options(2, 2);
  o.one_removal_per_event = true;
  EngineCache cache(o);
  std::vector<Event> events;
  cache.Serve(Seq(4, 1), &events);
  events.clear();
  cache.Serve(Seq(4, 10), &events);
  ASSERT_THAT(events, SizeIs(3));
  EXPECT_THAT(AsRemoved(events[0]).block_hashes, SizeIs(1));
  EXPECT_THAT(AsRemoved(events[1]).block_hashes, SizeIs(1));
  EXPECT_TRUE(std::holds_alternative<BlockStored>(events[2]));
}

TEST(EngineCacheTest, SharedPrefixIsKeptWhileBranchesAreEvicted) {
  EngineCache cache(Options(2, 5));
  auto with_tail = [](uint32_t tail) {
    auto t = Seq(6, 1);  // 3 shared blocks
    t.push_back(tail);
    t.push_back(tail + 1);
    return t;
  };
  std::vector<Event> events;
  for (uint32_t tail = 100; tail < 120; tail += 2) cache.Serve(with_tail(tail), &events);
  EXPECT_EQ(cache.CachedPrefixBlocks(Seq(6, 1)), 3u);
  EXPECT_EQ(cache.CachedPrefixBlocks(with_tail(118)), 4u);
  EXPECT_EQ(cache.CachedPrefixBlocks(with_tail(116)), 4u);
  EXPECT_EQ(cache.CachedPrefixBlocks(with_tail(100)), 3u);
}

TEST(EngineCacheTest, PromptLongerThanCapacityIsServedUpToIt) {
  EngineCache cache(Options(2, 3));
  std::vector<Event> events;
  cache.Serve(Seq(10, 1), &events);
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_THAT(AsStored(events[0]).block_hashes, SizeIs(3));
  EXPECT_EQ(cache.gpu_blocks(), 3u);
}

TEST(EngineCacheTest, CpuTierOffloadsOnEvictionAndLoadsBackOnHit) {
  EngineCache cache(Options(2, 2, 4));
  const auto a = Seq(4, 1), b = Seq(4, 10);
  const auto ha = Chain(42, a, 2), hb = Chain(42, b, 2);
  std::vector<Event> events;
  cache.Serve(a, &events);
  events.clear();
  cache.Serve(b, &events);
  // Each evicted GPU block is stored on CPU, then removed from GPU; leaf first.
  ASSERT_THAT(events, SizeIs(5));
  EXPECT_EQ(AsStored(events[0]).block_hashes, std::vector<uint64_t>({ha[1]}));
  EXPECT_THAT(AsStored(events[0]).parent_block_hash, Optional(ha[0]));
  EXPECT_THAT(AsStored(events[0]).medium, Optional(std::string("CPU")));
  EXPECT_EQ(AsStored(events[0]).token_ids, std::vector<uint32_t>({3, 4}));
  EXPECT_EQ(AsRemoved(events[1]).block_hashes, std::vector<uint64_t>({ha[1]}));
  EXPECT_THAT(AsRemoved(events[1]).medium, Optional(std::string("GPU")));
  EXPECT_EQ(AsStored(events[2]).block_hashes, std::vector<uint64_t>({ha[0]}));
  EXPECT_EQ(AsStored(events[2]).parent_block_hash, std::nullopt);
  EXPECT_EQ(AsRemoved(events[3]).block_hashes, std::vector<uint64_t>({ha[0]}));
  EXPECT_EQ(AsStored(events[4]).block_hashes, hb);
  EXPECT_EQ(cache.gpu_blocks(), 2u);
  EXPECT_EQ(cache.cpu_blocks(), 2u);
  EXPECT_EQ(cache.CachedPrefixBlocks(a), 2u);

  // a hits on CPU: b is offloaded, a loaded back to GPU (and kept on CPU).
  events.clear();
  EXPECT_EQ(cache.Serve(a, &events), 2u);
  ASSERT_THAT(events, SizeIs(5));
  EXPECT_THAT(AsStored(events[4]).medium, Optional(std::string("GPU")));
  EXPECT_EQ(AsStored(events[4]).block_hashes, ha);
  EXPECT_EQ(cache.cpu_blocks(), 4u);
  for (const HeldBlock& hb2 : cache.Snapshot()) EXPECT_TRUE(hb2.on_cpu);

  // A GPU block already on CPU is only removed from GPU; a full CPU tier evicts its LRU.
  events.clear();
  cache.Serve(Seq(4, 50), &events);
  ASSERT_THAT(events, SizeIs(2));
  EXPECT_EQ(AsRemoved(events[0]).block_hashes, std::vector<uint64_t>({ha[1], ha[0]}));
  events.clear();
  cache.Serve(Seq(4, 70), &events);
  bool cpu_removed = false;
  for (const Event& e : events) {
    if (const auto* r = std::get_if<BlockRemoved>(&e); r != nullptr && r->medium == "CPU") cpu_removed = true;
  }
  EXPECT_TRUE(cpu_removed);
  EXPECT_EQ(cache.cpu_blocks(), 4u);
  EXPECT_GT(cache.counters().removed_cpu, 0u);
}

TEST(EngineCacheTest, ResetForgetsEverythingAndChangesHashes) {
  EngineCache cache(Options(2, 8));
  std::vector<Event> events;
  cache.Serve(Seq(4, 1), &events);
  const auto before = AsStored(events[0]).block_hashes;
  cache.Reset(777);
  EXPECT_EQ(cache.blocks(), 0u);
  EXPECT_EQ(cache.CachedPrefixBlocks(Seq(4, 1)), 0u);
  events.clear();
  cache.Serve(Seq(4, 1), &events);
  EXPECT_NE(AsStored(events[0]).block_hashes, before);
}

// Random traffic, small tiers: the events, applied to a real PrefixIndex, give
// exactly what the cache says it holds, and the cache keeps its invariants.
class EngineCacheIndexTest : public ::testing::TestWithParam<size_t> {};

TEST_P(EngineCacheIndexTest, IndexAgreesWithTheCacheAfterEveryPrompt) {
  const size_t cpu = GetParam();
  EngineCacheOptions o = Options(4, 48, cpu);
  o.one_removal_per_event = cpu % 2 == 1;
  EngineCache cache(o);
  WorkloadOptions wo;
  wo.system_prompts = 2;
  wo.system_prompt_tokens = 30;
  wo.conversations = 6;
  wo.turn_tokens = 14;
  wo.max_turns = 5;
  wo.vocab_size = 50;  // small: distinct prompts often share blocks
  Workload workload(wo);
  PrefixIndex index;
  const WorkerKey worker{"ns/pod", 0};
  std::vector<std::vector<uint64_t>> old_chains;
  for (int step = 0; step < 400; ++step) {
    EventBatch batch;
    cache.Serve(workload.Next(), &batch.events);
    const ApplyResult r = index.Apply(worker, WorkerContext{"m", ""}, batch);
    ASSERT_EQ(r.unresolved_parents, 0u) << step;
    ASSERT_EQ(r.unknown_removals, 0u) << step;
    ASSERT_LE(cache.gpu_blocks(), 48u);
    ASSERT_LE(cache.cpu_blocks(), cpu);

    const auto held = cache.Snapshot();
    absl::flat_hash_set<uint64_t> held_set;
    size_t gpu = 0, cpu_held = 0;
    for (const HeldBlock& b : held) {
      if (b.parent_index_hash.has_value()) {
        ASSERT_TRUE(held_set.contains(*b.parent_index_hash)) << "not prefix-closed";
      }
      held_set.insert(b.index_hash);
      gpu += b.on_gpu;
      cpu_held += b.on_cpu;
    }
    const auto stats = index.GetWorkerStats(worker);
    ASSERT_TRUE(stats.has_value());
    ASSERT_EQ(stats->blocks, held.size()) << step;
    std::vector<std::pair<std::string, uint64_t>> media;
    if (gpu > 0) media.emplace_back("GPU", gpu);
    if (cpu_held > 0) media.emplace_back("CPU", cpu_held);
    EXPECT_THAT(stats->blocks_by_medium, ::testing::UnorderedElementsAreArray(media)) << step;

    if (step % 20 != 19) continue;
    const auto chains = LeafChains(held);
    for (const auto& chain : chains) {
      auto m = index.Match(MatchQuery{.model = "m", .block_hashes = chain});
      ASSERT_TRUE(m.ok());
      ASSERT_THAT(m->workers, SizeIs(1));
      EXPECT_EQ(m->workers[0].matched_blocks, chain.size());
    }
    // Chains held earlier match exactly as far as they are still held.
    for (const auto& chain : old_chains) {
      size_t still = 0;
      while (still < chain.size() && held_set.contains(chain[still])) ++still;
      auto m = index.Match(MatchQuery{.model = "m", .block_hashes = chain});
      ASSERT_TRUE(m.ok());
      EXPECT_EQ(m->workers.empty() ? 0u : m->workers[0].matched_blocks, still);
    }
    old_chains = chains;
  }
  EXPECT_GT(cache.counters().removed_gpu, 0u);
  if (cpu > 0) {
    EXPECT_GT(cache.counters().offloaded_blocks, 0u);
    EXPECT_GT(cache.counters().loaded_blocks, 0u);
    EXPECT_GT(cache.counters().removed_cpu, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(CpuTiers, EngineCacheIndexTest, ::testing::Values(0, 3, 16, 64));

}  // namespace
}  // namespace kvindex::sim
