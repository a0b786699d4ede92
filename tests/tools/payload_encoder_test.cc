#include "tools/sim/payload_encoder.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>

#include "core/events/event_decoder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/sim/engine_hash.h"

namespace kvindex::sim {
namespace {

const std::filesystem::path kWireDir = KVINDEX_WIRE_DIR;

std::string Vector(const std::string& name) {
  std::ifstream in(kWireDir / "vectors" / (name + ".msgpack"), std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

EventBatch Batch(std::vector<Event> events, std::optional<int64_t> dp_rank = 0) {
  EventBatch b;
  b.ts = 1700000000.5;
  b.dp_rank = dp_rank;
  b.events = std::move(events);
  return b;
}

BlockStored TwoBlocks() {
  BlockStored s;
  s.block_hashes = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  s.token_ids = {1, 2, 300, 70000};
  s.block_size = 2;
  s.medium = "GPU";
  return s;
}

// The simulator sends byte for byte what Python's msgpack produced for the engines' layouts.
TEST(PayloadEncoderTest, MatchesTheSharedWireVectorsByteForByte) {
  EXPECT_EQ(EncodePayload(Batch({TwoBlocks()}), PayloadLayout::kMap, HashEncoding::kInt),
            Vector("stored_map_current"));
  EXPECT_EQ(EncodePayload(Batch({TwoBlocks()}), PayloadLayout::kArray, HashEncoding::kInt),
            Vector("stored_array_12"));
  EXPECT_EQ(EncodePayload(Batch({BlockRemoved{{0x0123456789abcdefULL}, "GPU"}}), PayloadLayout::kArray,
                          HashEncoding::kInt),
            Vector("removed_array"));
  EXPECT_EQ(EncodePayload(Batch({AllBlocksCleared{}}), PayloadLayout::kMap, HashEncoding::kInt),
            Vector("cleared_map"));
  EXPECT_EQ(EncodePayload(Batch({AllBlocksCleared{}}), PayloadLayout::kArray, HashEncoding::kInt),
            Vector("cleared_array"));
}

TEST(PayloadEncoderTest, BytesHashesAreDigestsEndingWithTheHash) {
  const auto digest = EngineHashDigest(0x18191a1b1c1d1e1fULL);
  EXPECT_EQ(digest.size(), 32u);
  uint64_t tail = 0;
  for (int i = 24; i < 32; ++i) tail = (tail << 8) | digest[i];
  EXPECT_EQ(tail, 0x18191a1b1c1d1e1fULL);
  EXPECT_NE(EngineHashDigest(1), EngineHashDigest(2));
  const std::string payload = EncodePayload(Batch({BlockRemoved{{0x18191a1b1c1d1e1fULL}, "GPU"}}),
                                            PayloadLayout::kMap, HashEncoding::kBytes);
  EXPECT_NE(payload.find(std::string("\xc4\x20", 2) + std::string(digest.begin(), digest.end())), std::string::npos);
}

TEST(PayloadEncoderTest, SglangSendsSignedIntHashes) {
  BlockRemoved r{{0x9000000000000000ULL}, "GPU"};
  const std::string payload = EncodePayload(Batch({r}), PayloadLayout::kSglang, HashEncoding::kInt);
  EXPECT_NE(payload.find("\xd3\x90", 0, 2), std::string::npos);  // int64, negative
  const std::string vllm = EncodePayload(Batch({r}), PayloadLayout::kArray, HashEncoding::kInt);
  EXPECT_NE(vllm.find("\xcf\x90", 0, 2), std::string::npos);  // uint64
}

TEST(PayloadEncoderTest, NamesParseBothWays) {
  for (auto layout : {PayloadLayout::kMap, PayloadLayout::kArray, PayloadLayout::kSglang}) {
    absl::StatusOr<PayloadLayout> parsed = ParsePayloadLayout(PayloadLayoutName(layout));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, layout);
  }
  for (auto hashes : {HashEncoding::kInt, HashEncoding::kBytes}) {
    absl::StatusOr<HashEncoding> parsed = ParseHashEncoding(HashEncodingName(hashes));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, hashes);
  }
  EXPECT_EQ(ParsePayloadLayout("json").status().message(), "unknown payload layout \"json\" (map, array, sglang)");
  EXPECT_EQ(ParseHashEncoding("hex").status().code(), absl::StatusCode::kInvalidArgument);
}

// `batch` as the decoder sees it after EncodePayload: vLLM's layouts say
// group 0, full attention and no extra keys for an event that names none.
EventBatch AsSent(EventBatch batch, PayloadLayout layout) {
  if (layout == PayloadLayout::kSglang) return batch;
  for (Event& event : batch.events) {
    if (auto* s = std::get_if<BlockStored>(&event)) {
      s->extra_keys.resize(s->block_hashes.size());
      s->group_idx = s->group_idx.value_or(0);
      s->kv_cache_spec_kind = s->kv_cache_spec_kind.value_or("full_attention");
    } else if (auto* r = std::get_if<BlockRemoved>(&event); r != nullptr && layout == PayloadLayout::kMap) {
      r->group_idx = r->group_idx.value_or(0);
    }
  }
  return batch;
}

class PayloadRoundTripTest : public ::testing::TestWithParam<std::tuple<PayloadLayout, HashEncoding>> {};

TEST_P(PayloadRoundTripTest, DecoderGivesBackTheBatch) {
  const auto [layout, hashes] = GetParam();
  BlockStored chained = TwoBlocks();
  chained.parent_block_hash = 0x8000000000000001ULL;
  chained.medium = "CPU";
  chained.lora_id = 1;
  chained.lora_name = "sql";
  BlockStored big = TwoBlocks();
  big.block_size = 16;
  big.block_hashes = {1, 2, 3};
  big.token_ids.resize(48, 150000);
  const EventBatch batch = Batch({TwoBlocks(), chained, big, BlockRemoved{{0xffffffffffffffffULL, 7}, "GPU"},
                                  BlockRemoved{{5}, "CPU"}, AllBlocksCleared{}},
                                 3);
  absl::StatusOr<EventBatch> decoded = DecodeEventBatch(EncodePayload(batch, layout, hashes));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->skipped_events, 0u);
  EXPECT_EQ(decoded->skipped_fields, 0u);
  EXPECT_EQ(*decoded, AsSent(batch, layout));
}

// vLLM's layouts (SGLang's array layout has no 2026 fields).
TEST(PayloadEncoderTest, The2026FieldsComeBackAsSet) {
  for (const PayloadLayout layout : {PayloadLayout::kMap, PayloadLayout::kArray}) {
    SCOPED_TRACE(PayloadLayoutName(layout));
    const HashEncoding hashes = HashEncoding::kBytes;
    BlockStored window = TwoBlocks();
    window.group_idx = 1;
    window.kv_cache_spec_kind = "sliding_window";
    window.kv_cache_spec_sliding_window = 128;
    window.extra_keys = {ExtraKey{},
                         ExtraKey{.kind = ExtraKey::Kind::kList,
                                  .items = {ExtraKey{.kind = ExtraKey::Kind::kStr, .bytes = "img"},
                                            ExtraKey{.kind = ExtraKey::Kind::kInt, .number = -2},
                                            ExtraKey{.kind = ExtraKey::Kind::kBytes, .bytes = std::string("\0\1", 2)}}}};
    BlockRemoved removed{{7}, "GPU"};
    removed.group_idx = 1;
    if (layout == PayloadLayout::kMap) {
      window.locality = "REMOTE";
      window.ownership = "fs";
      window.session_id = "s";
      window.cache_salt = "salt";
      removed.locality = "LOCAL";
    }
    const EventBatch batch = Batch({window, removed}, 0);
    absl::StatusOr<EventBatch> decoded = DecodeEventBatch(EncodePayload(batch, layout, hashes));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, batch);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, PayloadRoundTripTest,
                         ::testing::Combine(::testing::Values(PayloadLayout::kMap, PayloadLayout::kArray,
                                                              PayloadLayout::kSglang),
                                            ::testing::Values(HashEncoding::kInt, HashEncoding::kBytes)));

}  // namespace
}  // namespace kvindex::sim
