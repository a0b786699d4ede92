// Extra keys in the index hash (core/index/extra_keys_hash.h): the vectors computed
// outside the project, and what they mean for stores and Matches — images
// told apart, salts kept apart, a leading LoRA name ignored — plus vLLM's
// offloaded chunks (no tokens) resolved through the worker's GPU copies.

#include "core/index/extra_keys_hash.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/events/event_decoder.h"
#include "core/index/block_hash.h"
#include "core/index/prefix_index.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;
using Json = nlohmann::json;

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A JSON item of the vectors file as an ExtraKey ("0x..." strs are bytes).
ExtraKey KeyOf(const Json& j) {
  ExtraKey k;
  if (j.is_null()) return k;
  if (j.is_array()) {
    k.kind = ExtraKey::Kind::kList;
    for (const Json& item : j) k.items.push_back(KeyOf(item));
  } else if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (s.starts_with("0x")) {
      k.kind = ExtraKey::Kind::kBytes;
      for (size_t i = 2; i + 1 < s.size(); i += 2) k.bytes.push_back(static_cast<char>(std::stoi(s.substr(i, 2), nullptr, 16)));
    } else {
      k.kind = ExtraKey::Kind::kStr;
      k.bytes = s;
    }
  } else if (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t{INT64_MAX}) {
    k.kind = ExtraKey::Kind::kInt;
    k.number = static_cast<int64_t>(j.get<uint64_t>());
    k.number_unsigned = true;
  } else {
    k.kind = ExtraKey::Kind::kInt;
    k.number = j.get<int64_t>();
  }
  return k;
}

std::string Hex(uint64_t h) {
  char buf[19];
  std::snprintf(buf, sizeof(buf), "0x%016llx", static_cast<unsigned long long>(h));
  return buf;
}

TEST(ExtraKeysHashTest, ReproducesTheVectorsComputedOutsideTheProject) {
  const Json doc = Json::parse(ReadFile(std::filesystem::path(KVINDEX_SOURCE_DIR) / "tests/testdata/extra_keys_hash_vectors.json"));
  ASSERT_GE(doc.at("cases").size(), 7u);
  for (const Json& c : doc.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const std::string model = c.at("model"), lora = c.at("lora_name");
    const uint32_t bs = c.at("block_size");
    const std::vector<uint32_t> tokens = c.at("token_ids");
    std::vector<MultimodalInput> inputs;
    for (const Json& mm : c.value("mm_inputs", Json::array())) inputs.push_back({mm.at("identifier"), mm.at("offset"), mm.at("length")});
    const std::string salt = c.value("cache_salt", "");
    uint64_t h = ContextSeed(model, lora, bs);
    std::vector<std::string> got;
    ExtraKeysHasher keys;
    for (size_t i = 0; i < tokens.size() / bs; ++i) {
      h = HashBlock(h, absl::MakeConstSpan(tokens).subspan(i * bs, bs));
      keys.Clear();
      if (c.contains("extra_keys")) {
        if (i < c["extra_keys"].size()) AddEventExtraKeys(KeyOf(c["extra_keys"][i]), lora, keys);
      } else {
        AddQueryExtraKeys(inputs, salt, i * bs, bs, keys);
      }
      h = keys.Hash(h);
      got.push_back(Hex(h));
    }
    EXPECT_EQ(got, c.at("hashes").get<std::vector<std::string>>());
  }
}

// A worker storing one prompt of `tokens` with per-block `extra_keys`.
EventBatch Stored(std::vector<uint64_t> engine, std::vector<uint32_t> tokens, uint32_t bs,
                  std::vector<ExtraKey> extra_keys = {}, std::optional<std::string> medium = "GPU") {
  EventBatch batch;
  BlockStored e;
  e.block_hashes = std::move(engine);
  e.token_ids = std::move(tokens);
  e.block_size = bs;
  e.medium = std::move(medium);
  e.extra_keys = std::move(extra_keys);
  batch.events.push_back(std::move(e));
  return batch;
}

ExtraKey Str(std::string s) { return ExtraKey{.kind = ExtraKey::Kind::kStr, .bytes = std::move(s)}; }
ExtraKey Int(int64_t v) { return ExtraKey{.kind = ExtraKey::Kind::kInt, .number = v}; }
ExtraKey List(std::vector<ExtraKey> items) { return ExtraKey{.kind = ExtraKey::Kind::kList, .items = std::move(items)}; }
ExtraKey Image(std::string id, int64_t relative) { return List({Str(std::move(id)), Int(relative)}); }

// Matched blocks per pod for `query`, ordered by pod.
std::map<std::string, uint32_t> Matched(const PrefixIndex& index, MatchQuery query) {
  absl::StatusOr<MatchResult> result = index.Match(query);
  EXPECT_TRUE(result.ok()) << result.status();
  std::map<std::string, uint32_t> out;
  if (result.ok()) {
    for (const WorkerMatch& w : result->workers) out[w.worker.pod] = w.matched_blocks;
  }
  return out;
}

const WorkerContext kContext{.model = "m", .default_lora = ""};
// Token 9, then an image of 5 placeholder tokens (32000) at offset 1, then 7, 8: blocks of 2.
const std::vector<uint32_t> kPrompt = {9, 32000, 32000, 32000, 32000, 32000, 7, 8};

// What vLLM sends for kPrompt with image `id` (offset 1, 5 tokens) in blocks of 2.
std::vector<ExtraKey> ImageKeys(const std::string& id) {
  return {List({Image(id, 1)}), List({Image(id, -1)}), List({Image(id, -3)}), ExtraKey{}};
}

TEST(ExtraKeysIndexTest, ImagesWithTheSamePlaceholdersAreDifferentBlocks) {
  PrefixIndex index;
  (void)index.Apply({"ns/a", 0}, kContext, Stored({1, 2, 3, 4}, kPrompt, 2, ImageKeys("img-a")));
  (void)index.Apply({"ns/b", 0}, kContext, Stored({5, 6, 7, 8}, kPrompt, 2, ImageKeys("img-b")));
  const std::vector<MultimodalInput> a = {{"img-a", 1, 5}};
  const std::vector<MultimodalInput> b = {{"img-b", 1, 5}};
  const std::vector<MultimodalInput> c = {{"img-c", 1, 5}};
  EXPECT_THAT(Matched(index, {.model = "m", .token_ids = kPrompt, .mm_inputs = a}), ElementsAre(Pair("ns/a", 4)));
  EXPECT_THAT(Matched(index, {.model = "m", .token_ids = kPrompt, .mm_inputs = b}), ElementsAre(Pair("ns/b", 4)));
  EXPECT_TRUE(Matched(index, {.model = "m", .token_ids = kPrompt, .mm_inputs = c}).empty());
  // A gateway that sends no mm_inputs matches no image block (block 0 already holds one).
  EXPECT_TRUE(Matched(index, {.model = "m", .token_ids = kPrompt}).empty());
}

TEST(ExtraKeysIndexTest, SaltedPromptsMatchOnlyTheirSalt) {
  PrefixIndex index;
  const std::vector<uint32_t> prompt = {1, 2, 3, 4};
  // vLLM: the salt is an extra key of block 0; block 1 chains from it.
  (void)index.Apply({"ns/salted", 0}, kContext, Stored({1, 2}, prompt, 2, {List({Str("tenant-a")}), ExtraKey{}}));
  // SGLang: cache_salt is a field of the event.
  EventBatch sglang = Stored({3, 4}, prompt, 2);
  std::get<BlockStored>(sglang.events[0]).cache_salt = "tenant-b";
  (void)index.Apply({"ns/sglang", 0}, kContext, sglang);
  (void)index.Apply({"ns/plain", 0}, kContext, Stored({5, 6}, prompt, 2));
  EXPECT_THAT(Matched(index, {.model = "m", .token_ids = prompt, .cache_salt = "tenant-a"}),
              ElementsAre(Pair("ns/salted", 2)));
  EXPECT_THAT(Matched(index, {.model = "m", .token_ids = prompt, .cache_salt = "tenant-b"}),
              ElementsAre(Pair("ns/sglang", 2)));
  EXPECT_THAT(Matched(index, {.model = "m", .token_ids = prompt}), ElementsAre(Pair("ns/plain", 2)));
}

TEST(ExtraKeysIndexTest, ALeadingLoraNameIsCoveredByTheSeedAlone) {
  PrefixIndex index;
  const std::vector<uint32_t> prompt = {1, 2, 3, 4};
  EventBatch batch = Stored({1, 2}, prompt, 2, {List({Str("sql")}), List({Str("sql")})});
  std::get<BlockStored>(batch.events[0]).lora_name = "sql";
  (void)index.Apply({"ns/a", 0}, kContext, batch);
  EXPECT_THAT(Matched(index, {.model = "m", .lora_name = "sql", .token_ids = prompt}), ElementsAre(Pair("ns/a", 2)));
  EXPECT_TRUE(Matched(index, {.model = "m", .token_ids = prompt}).empty());
}

TEST(ExtraKeysIndexTest, TheSharedVectorMatchesAQueryWithTheSameInputsAndSalt) {
  const std::string payload =
      ReadFile(std::filesystem::path(KVINDEX_WIRE_DIR) / "vectors" / "extra_keys_map.msgpack");
  absl::StatusOr<EventBatch> batch = DecodeEventBatch(payload);
  ASSERT_TRUE(batch.ok()) << batch.status();
  PrefixIndex index;
  (void)index.Apply({"ns/a", 0}, kContext, *batch);
  // [9, 32000, 32000, 32000]: image img-7f3a from token 1, salt tenant-salt, LoRA sql-adapter.
  const std::vector<uint32_t> prompt = {9, 32000, 32000, 32000};
  const std::vector<MultimodalInput> image = {{"img-7f3a", 1, 3}};
  EXPECT_THAT(Matched(index, {.model = "m", .lora_name = "sql-adapter", .token_ids = prompt,
                              .cache_salt = "tenant-salt", .mm_inputs = image}),
              ElementsAre(Pair("ns/a", 2)));
  EXPECT_TRUE(Matched(index, {.model = "m", .lora_name = "sql-adapter", .token_ids = prompt, .mm_inputs = image}).empty());
}

// vLLM's OffloadingConnector: BlockStored without tokens naming the GPU hash
// of a chunk's last block; block_size is the chunk's (4: two GPU blocks of 2).
EventBatch Offloaded(std::vector<uint64_t> engine, std::string medium = "CPU", uint32_t chunk_tokens = 4) {
  EventBatch batch;
  BlockStored e;
  e.block_hashes = std::move(engine);
  e.block_size = chunk_tokens;
  e.medium = std::move(medium);
  batch.events.push_back(std::move(e));
  return batch;
}

EventBatch Concat(std::vector<EventBatch> batches) {
  EventBatch out;
  for (EventBatch& b : batches) {
    for (Event& e : b.events) out.events.push_back(std::move(e));
  }
  return out;
}

std::vector<std::pair<std::string, uint32_t>> MediaOf(const PrefixIndex& index, const std::vector<uint32_t>& prompt,
                                                      uint32_t* matched = nullptr) {
  absl::StatusOr<MatchResult> r = index.Match({.model = "m", .token_ids = prompt});
  if (!r.ok() || r->workers.empty()) return {};
  if (matched != nullptr) *matched = r->workers[0].matched_blocks;
  const auto& media = r->workers[0].blocks_by_medium;
  return {media.begin(), media.end()};
}

// A chunk of f GPU blocks names its last; it covers its f-1 predecessors too,
// and its removal takes them off the medium.
TEST(OffloadedChunkTest, AChunkCoversTheBlockItNamesAndItsPredecessors) {
  PrefixIndex index;
  const WorkerKey w{"ns/a", 0};
  std::vector<uint32_t> prompt(16);
  for (uint32_t i = 0; i < 16; ++i) prompt[i] = i + 1;
  // Eight GPU blocks of 2 tokens, offloaded in chunks of 8 tokens (f = 4) in the same batch.
  const ApplyResult r = index.Apply(
      w, kContext, Concat({Stored({1, 2, 3, 4, 5, 6, 7, 8}, prompt, 2), Offloaded({4, 8}, "CPU", 8)}));
  EXPECT_EQ(r.unknown_chunks, 0u);
  uint32_t matched = 0;
  EXPECT_THAT(MediaOf(index, prompt, &matched), UnorderedElementsAre(Pair("GPU", 8), Pair("CPU", 8)));
  // The GPU evicts every block: the CPU copies still match.
  EventBatch gpu_removal;
  gpu_removal.events.push_back(BlockRemoved{{1, 2, 3, 4, 5, 6, 7, 8}, "GPU"});
  (void)index.Apply(w, kContext, gpu_removal);
  EXPECT_THAT(MediaOf(index, prompt, &matched), UnorderedElementsAre(Pair("CPU", 8)));
  EXPECT_EQ(matched, 8u);
  // The second chunk leaves the CPU: blocks 4..7 (engine 5..8) go.
  EventBatch chunk_removal;
  chunk_removal.events.push_back(BlockRemoved{{8}, "CPU"});
  const ApplyResult removed = index.Apply(w, kContext, chunk_removal);
  EXPECT_EQ(removed.blocks_removed, 4u);
  EXPECT_EQ(removed.unknown_removals, 0u);
  EXPECT_THAT(MediaOf(index, prompt, &matched), UnorderedElementsAre(Pair("CPU", 4)));
  EXPECT_EQ(matched, 4u);
  EXPECT_THAT(index.EngineHashes(w), UnorderedElementsAre(1u, 2u, 3u, 4u));
}

TEST(OffloadedChunkTest, AnAbsurdChunkIsCountedAndChangesNothing) {
  PrefixIndex index;
  const WorkerKey w{"ns/a", 0};
  const std::vector<uint32_t> prompt = {1, 2, 3, 4};
  (void)index.Apply(w, kContext, Stored({11, 12}, prompt, 2));
  const ApplyResult r = index.Apply(w, kContext, Offloaded({12}, "CPU", 2'000'000));  // f = 10^6
  EXPECT_EQ(r.unknown_chunks, 1u);
  EXPECT_EQ(r.blocks_stored, 0u);
  EXPECT_THAT(MediaOf(index, prompt), UnorderedElementsAre(Pair("GPU", 2)));
}

// Every block keeps its parent, so a chunk of blocks stored in an earlier
// batch covers the block it names and its predecessor (f = 2).
TEST(OffloadedChunkTest, AChunkAddsItsMediumToTheGpuCopyAndOutlivesIt) {
  PrefixIndex index;
  const WorkerKey w{"ns/a", 0};
  const std::vector<uint32_t> prompt = {1, 2, 3, 4};
  (void)index.Apply(w, kContext, Stored({11, 12}, prompt, 2));
  const ApplyResult offload = index.Apply(w, kContext, Offloaded({12, 99}));
  EXPECT_EQ(offload.blocks_stored, 2u);
  EXPECT_EQ(offload.unknown_chunks, 1u);  // 99 was never stored
  absl::StatusOr<MatchResult> both = index.Match({.model = "m", .token_ids = prompt});
  ASSERT_TRUE(both.ok());
  ASSERT_EQ(both->workers.size(), 1u);
  EXPECT_THAT(both->workers[0].blocks_by_medium, UnorderedElementsAre(Pair("GPU", 2), Pair("CPU", 2)));
  // The GPU copy of block 1 goes; its CPU copy stays, block 0 too (GPU and CPU).
  EventBatch removal;
  removal.events.push_back(BlockRemoved{{12}, "GPU"});
  (void)index.Apply(w, kContext, removal);
  absl::StatusOr<MatchResult> cpu = index.Match({.model = "m", .token_ids = prompt});
  ASSERT_TRUE(cpu.ok());
  ASSERT_EQ(cpu->workers.size(), 1u);
  EXPECT_EQ(cpu->workers[0].matched_blocks, 2u);
  EXPECT_THAT(cpu->workers[0].blocks_by_medium, UnorderedElementsAre(Pair("GPU", 1), Pair("CPU", 2)));
  // The chunk's removal clears the CPU copies of both: block 0 stays on GPU.
  EventBatch chunk_removal;
  chunk_removal.events.push_back(BlockRemoved{{12}, "CPU"});
  (void)index.Apply(w, kContext, chunk_removal);
  EXPECT_THAT(index.EngineHashes(w), ElementsAre(11u));
}

// vLLM's locality and ownership are kept with the medium: a remote copy is a
// tier of its own, weighed by "CPU/REMOTE" when given, else by "CPU".
TEST(TierTest, ARemoteCopyIsATierOfItsOwnWeighedByItsMediumOrItsRemoteKey) {
  PrefixIndex index;
  const WorkerKey w{"ns/a", 0};
  const std::vector<uint32_t> prompt = {1, 2, 3, 4};
  EventBatch remote = Stored({11, 12}, prompt, 2, {}, "CPU");
  std::get<BlockStored>(remote.events[0]).locality = "REMOTE";
  std::get<BlockStored>(remote.events[0]).ownership = "fs";
  (void)index.Apply(w, kContext, remote);
  (void)index.Apply(w, kContext, Stored({11}, {1, 2}, 2, {}, "CPU"));  // block 0 also on the local CPU
  MatchQuery q{.model = "m", .token_ids = prompt};
  q.medium_weights = {{"CPU", 0.5}};
  absl::StatusOr<MatchResult> r = index.Match(q);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->workers.size(), 1u);
  EXPECT_THAT(r->workers[0].blocks_by_medium, UnorderedElementsAre(Pair("CPU/REMOTE@fs", 2), Pair("CPU", 1)));
  EXPECT_DOUBLE_EQ(r->workers[0].score, 1.0);  // both blocks at CPU's 0.5
  q.medium_weights = {{"CPU", 0.5}, {"CPU/REMOTE", 0.1}};
  r = index.Match(q);
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->workers[0].score, 0.6);  // block 0: the best of 0.5 and 0.1; block 1: 0.1
  // A removal names its tier: the local CPU copy goes, the remote one stays.
  EventBatch removal;
  removal.events.push_back(BlockRemoved{{11}, "CPU"});
  (void)index.Apply(w, kContext, removal);
  EXPECT_THAT(MediaOf(index, prompt), UnorderedElementsAre(Pair("CPU/REMOTE@fs", 2)));
}

}  // namespace
}  // namespace kvindex
