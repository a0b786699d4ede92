// The engine variants of issue 15 (vLLM's chunked CPU offloading, hybrid
// sliding-window and Mamba groups, multimodal and salted prompts): their
// events, and their ground truth checked against a real PrefixIndex fed the
// events through the wire (encoded, then decoded as kvindex does).

#include <string>
#include <variant>
#include <vector>

#include "core/events/event_decoder.h"
#include "core/index/prefix_index.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/tools/engine_cache_testing.h"
#include "tools/sim/engine_cache.h"
#include "tools/sim/payload_encoder.h"
#include "tools/sim/workload.h"

namespace kvindex::sim {
namespace {

using ::testing::Optional;
using ::testing::SizeIs;

TEST(EngineVariantsTest, OffloadingStoresWholeChunksWithoutTokensNamedByTheirLastBlock) {
  EngineCacheOptions o = Options(4, 100, 8);
  o.offload_chunk_blocks = 2;
  EngineCache cache(o);
  std::vector<Event> events;
  cache.Serve(Seq(22, 1), &events);  // 5 full blocks: chunks [0,1] and [2,3]
  ASSERT_THAT(events, SizeIs(2));
  const BlockStored gpu = std::get<BlockStored>(events[0]);
  const BlockStored cpu = std::get<BlockStored>(events[1]);
  ASSERT_THAT(gpu.block_hashes, SizeIs(5));
  EXPECT_TRUE(cpu.token_ids.empty());
  EXPECT_EQ(cpu.parent_block_hash, std::nullopt);
  EXPECT_EQ(cpu.block_size, 8u);
  EXPECT_THAT(cpu.medium, Optional(std::string("CPU")));
  EXPECT_EQ(cpu.block_hashes, (std::vector<uint64_t>{gpu.block_hashes[1], gpu.block_hashes[3]}));
  EXPECT_EQ(cache.CachedPrefixMedia(Seq(22, 1)).cpu, 4u);

  // Again: nothing new; 4 chunks fill the CPU tier, then the least recently used one goes.
  events.clear();
  cache.Serve(Seq(22, 1), &events);
  EXPECT_THAT(events, SizeIs(0));
  cache.Serve(Seq(16, 100), &events);
  events.clear();
  cache.Serve(Seq(8, 200), &events);
  ASSERT_THAT(events, SizeIs(3));
  const auto& removed = std::get<BlockRemoved>(events[1]);
  EXPECT_THAT(removed.medium, Optional(std::string("CPU")));
  EXPECT_EQ(removed.block_hashes, (std::vector<uint64_t>{gpu.block_hashes[3]}));  // parents are touched last
}

TEST(EngineVariantsTest, SlidingWindowGroupKeepsTheBlocksEndingEachPrompt) {
  EngineCacheOptions o = Options(4, 100);
  o.hybrid = HybridKind::kSlidingWindow;
  o.sliding_window = 6;  // ceil(5/4) = 2 blocks
  EngineCache cache(o);
  ASSERT_EQ(cache.Group1Keep(), 2u);
  std::vector<Event> events;
  cache.Serve(Seq(20, 1), &events);  // 5 blocks
  ASSERT_THAT(events, SizeIs(3));
  const auto& full = std::get<BlockStored>(events[0]);
  const auto& window = std::get<BlockStored>(events[1]);
  const auto& dropped = std::get<BlockRemoved>(events[2]);
  EXPECT_THAT(full.group_idx, Optional(0u));
  EXPECT_THAT(full.kv_cache_spec_kind, Optional(std::string("full_attention")));
  EXPECT_THAT(window.group_idx, Optional(1u));
  EXPECT_THAT(window.kv_cache_spec_kind, Optional(std::string("sliding_window")));
  EXPECT_THAT(window.kv_cache_spec_sliding_window, Optional(6u));
  EXPECT_EQ(window.block_hashes, full.block_hashes);
  EXPECT_THAT(dropped.group_idx, Optional(1u));
  EXPECT_EQ(dropped.block_hashes, (std::vector<uint64_t>(full.block_hashes.begin(), full.block_hashes.begin() + 3)));
  EXPECT_EQ(cache.group1_blocks(), 2u);
  // vLLM's hit: the prompt (5 blocks), not a prefix whose window blocks are gone.
  EXPECT_EQ(cache.CachedPrefixBlocks(Seq(20, 1)), 5u);
  EXPECT_EQ(cache.CachedPrefixBlocks(Seq(16, 1)), 0u);  // blocks 2, 3 left the window
}

TEST(EngineVariantsTest, MambaGroupKeepsOnlyTheLastBlock) {
  EngineCacheOptions o = Options(4, 100);
  o.hybrid = HybridKind::kMamba;
  EngineCache cache(o);
  std::vector<Event> events;
  cache.Serve(Seq(12, 1), &events);
  cache.Serve(Seq(20, 1), &events);
  EXPECT_EQ(cache.group1_blocks(), 1u);
  EXPECT_EQ(cache.CachedPrefixBlocks(Seq(24, 1)), 5u);
  EXPECT_EQ(cache.CachedPrefixBlocks(Seq(19, 1)), 0u);  // block 3's state is gone
  const auto& mamba = std::get<BlockStored>(events[1]);
  EXPECT_THAT(mamba.kv_cache_spec_kind, Optional(std::string("mamba")));
  EXPECT_THAT(mamba.block_hashes, SizeIs(1));
}

TEST(EngineVariantsTest, ImagesAndSaltsAreExtraKeysAndPartOfTheHashes) {
  EngineCacheOptions o = Options(4, 100);
  EngineCache cache(o);
  std::vector<uint32_t> tokens = Seq(4, 1);
  tokens.insert(tokens.end(), 6, 9999);  // an image over blocks 1 and 2
  tokens.push_back(7);
  tokens.push_back(8);
  PromptKeys a{.cache_salt = "tenant-0", .mm_inputs = {{"image-a", 4, 6}}};
  PromptKeys b = a;
  b.mm_inputs[0].identifier = "image-b";
  std::vector<Event> events;
  cache.Serve(tokens, a, &events);
  const auto& s = std::get<BlockStored>(events[0]);
  ASSERT_THAT(s.extra_keys, SizeIs(3));
  ASSERT_THAT(s.extra_keys[0].items, SizeIs(1));
  EXPECT_EQ(s.extra_keys[0].items[0].bytes, "tenant-0");
  ASSERT_THAT(s.extra_keys[2].items, SizeIs(1));
  EXPECT_EQ(s.extra_keys[2].items[0].items[0].bytes, "image-a");
  EXPECT_EQ(s.extra_keys[2].items[0].items[1].number, -4);  // began 4 tokens before block 2
  EXPECT_EQ(cache.CachedPrefixBlocks(tokens), 0u) << "unsalted: another prompt";
  EXPECT_EQ(cache.CachedPrefixMedia(tokens, b).blocks, 1u) << "another image: only block 0 is shared";
  EXPECT_EQ(cache.CachedPrefixMedia(tokens, a).blocks, 3u);

  o.salt_as_field = true;
  EngineCache sglang(o);
  events.clear();
  sglang.Serve(tokens, a, &events);
  const auto& f = std::get<BlockStored>(events[0]);
  EXPECT_THAT(f.cache_salt, Optional(std::string("tenant-0")));
  EXPECT_EQ(f.extra_keys[0].kind, ExtraKey::Kind::kNil);
}

// Random traffic of one variant; every batch goes through the wire into a
// real PrefixIndex, which must then agree with the engine's ground truth.
struct Variant {
  std::string name;
  PayloadLayout layout = PayloadLayout::kMap;
  HashEncoding hashes = HashEncoding::kInt;
  uint32_t chunk = 0;
  size_t cpu = 0;
  HybridKind hybrid = HybridKind::kNone;
  uint32_t window = 0;
  double mm = 0;
  uint32_t tenants = 0;
};

class EngineVariantIndexTest : public ::testing::TestWithParam<Variant> {};

TEST_P(EngineVariantIndexTest, IndexAgreesWithTheGroundTruth) {
  const Variant& v = GetParam();
  EngineCacheOptions o = Options(4, 40, v.cpu);
  o.offload_chunk_blocks = v.chunk;
  o.hybrid = v.hybrid;
  o.sliding_window = v.window;
  o.salt_as_field = v.layout == PayloadLayout::kMap;
  EngineCache cache(o);
  WorkloadOptions wo;
  wo.system_prompts = 2;
  wo.system_prompt_tokens = 30;
  wo.conversations = 6;
  wo.turn_tokens = 14;
  wo.max_turns = 5;
  wo.vocab_size = 50;
  wo.mm_fraction = v.mm;
  wo.image_tokens = 9;
  wo.salted_tenants = v.tenants;
  Workload workload(wo);
  PrefixIndex index;
  const WorkerKey worker{"ns/pod", 0};
  Rng rng(7);
  size_t hits = 0;
  for (int step = 0; step < 300; ++step) {
    EventBatch batch;
    const auto prompt = workload.Next();
    cache.Serve(prompt, workload.LastKeys(), &batch.events);
    absl::StatusOr<EventBatch> decoded = DecodeEventBatch(EncodePayload(batch, v.layout, v.hashes));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    ASSERT_THAT(decoded->bad_events, SizeIs(0)) << decoded->bad_events[0].message;
    const ApplyResult r = index.Apply(worker, WorkerContext{"m", ""}, *decoded);
    ASSERT_EQ(r.unresolved_parents, 0u) << step;
    ASSERT_EQ(r.unknown_removals, 0u) << step;
    ASSERT_EQ(r.unknown_chunks, 0u) << step;

    const auto held = cache.Snapshot();
    size_t gpu = 0, cpu = 0, group1 = 0;
    for (const HeldBlock& b : held) {
      gpu += b.on_gpu;
      cpu += b.on_cpu;
      group1 += b.in_group1;
    }
    ASSERT_EQ(group1, cache.group1_blocks());
    const auto stats = index.GetWorkerStats(worker);
    ASSERT_TRUE(stats.has_value());
    ASSERT_EQ(stats->blocks, held.size()) << step;
    std::vector<std::pair<std::string, uint64_t>> media;
    if (gpu > 0) media.emplace_back("GPU", gpu);
    if (cpu > 0) media.emplace_back("CPU", cpu);
    ASSERT_THAT(stats->blocks_by_medium, ::testing::UnorderedElementsAreArray(media)) << step;
    ASSERT_EQ(index.Stats().entries, held.size() + group1) << step;

    if (step % 10 != 9) continue;
    std::vector<SamplePrompt> prompts = workload.SampleConversations(4, rng);
    for (SamplePrompt& p : workload.SampleShared(rng)) prompts.push_back(std::move(p));
    for (const SamplePrompt& p : prompts) {
      const CachedPrefix want = cache.CachedPrefixMedia(p.tokens, p.keys);
      auto m = index.Match(MatchQuery{.model = "m",
                                      .token_ids = p.tokens,
                                      .cache_salt = p.keys.cache_salt,
                                      .mm_inputs = p.keys.mm_inputs});
      ASSERT_TRUE(m.ok()) << m.status();
      if (want.blocks == 0) {
        EXPECT_THAT(m->workers, SizeIs(0)) << step << " " << p.label;
        continue;
      }
      ++hits;
      ASSERT_THAT(m->workers, SizeIs(1)) << step << " " << p.label;
      EXPECT_EQ(m->workers[0].matched_blocks, want.blocks) << step << " " << p.label;
      EXPECT_EQ(m->workers[0].matched_tokens, want.blocks * 4) << step << " " << p.label;
      std::vector<std::pair<std::string, uint64_t>> want_media;
      if (want.gpu > 0) want_media.emplace_back("GPU", want.gpu);
      if (want.cpu > 0) want_media.emplace_back("CPU", want.cpu);
      EXPECT_THAT(m->workers[0].blocks_by_medium, ::testing::UnorderedElementsAreArray(want_media))
          << step << " " << p.label;
    }
  }
  EXPECT_GT(hits, 0u);
  const CacheCounters& c = cache.counters();
  EXPECT_GT(c.removed_gpu, 0u);
  if (v.chunk > 0) {
    EXPECT_GT(c.offloaded_chunks, 0u);
    EXPECT_GT(c.removed_cpu, 0u);
  }
  if (v.hybrid != HybridKind::kNone) {
    EXPECT_GT(c.group1_removed, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, EngineVariantIndexTest,
    ::testing::Values(Variant{.name = "offload2", .chunk = 2, .cpu = 16},
                      Variant{.name = "offload3_bytes", .hashes = HashEncoding::kBytes, .chunk = 3, .cpu = 12},
                      Variant{.name = "window", .hybrid = HybridKind::kSlidingWindow, .window = 10},
                      Variant{.name = "mamba_array", .layout = PayloadLayout::kArray, .hybrid = HybridKind::kMamba},
                      Variant{.name = "mm_salt", .mm = 0.5, .tenants = 2},
                      Variant{.name = "mm_salt_array", .layout = PayloadLayout::kArray, .mm = 0.5, .tenants = 2},
                      Variant{.name = "all", .chunk = 2, .cpu = 16, .hybrid = HybridKind::kSlidingWindow,
                              .window = 9, .mm = 0.3, .tenants = 2},
                      Variant{.name = "mamba_cpu_blocks", .cpu = 8, .hybrid = HybridKind::kMamba, .mm = 0.3}),
    [](const ::testing::TestParamInfo<Variant>& info) { return info.param.name; });

}  // namespace
}  // namespace kvindex::sim
