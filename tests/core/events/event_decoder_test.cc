#include "core/events/event_decoder.h"

#include <msgpack.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/events/event_json.h"
#include "tests/testing/wire_expectations.h"

namespace kvindex {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Json = nlohmann::json;
using Packer = msgpack::packer<msgpack::sbuffer>;

// ---------------------------------------------------------------------------
// Shared wire vectors.

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const std::filesystem::path kWireDir = KVINDEX_WIRE_DIR;

Json Expected() { return Json::parse(ReadFile(kWireDir / "expected.json")); }

// name -> payload, for every vector named in expected.json.
std::map<std::string, std::string> Vectors() {
  std::map<std::string, std::string> out;
  const Json expected = Expected();
  for (const auto& [name, unused] : expected.items()) {
    if (name.starts_with("_")) continue;
    out[name] = ReadFile(kWireDir / "vectors" / (name + ".msgpack"));
  }
  return out;
}

uint64_t HexHash(const Json& j) { return std::stoull(j.get<std::string>(), nullptr, 16); }

std::vector<uint64_t> HexHashes(const Json& j) {
  std::vector<uint64_t> out;
  for (const Json& h : j) out.push_back(HexHash(h));
  return out;
}

template <typename T>
std::optional<T> Opt(const Json& j) {
  return j.is_null() ? std::nullopt : std::optional<T>(j.get<T>());
}

void ExpectEventMatches(const Json& want, const Event& got) {
  const std::string type = want.at("type");
  if (type == "BlockStored") {
    const auto* e = std::get_if<BlockStored>(&got);
    ASSERT_NE(e, nullptr) << "want BlockStored";
    EXPECT_EQ(e->block_hashes, HexHashes(want.at("block_hashes")));
    const Json& parent = want.at("parent_block_hash");
    EXPECT_EQ(e->parent_block_hash,
              parent.is_null() ? std::nullopt : std::optional<uint64_t>(HexHash(parent)));
    EXPECT_EQ(e->token_ids, want.at("token_ids").get<std::vector<uint32_t>>());
    EXPECT_EQ(e->block_size, want.at("block_size").get<uint32_t>());
    EXPECT_EQ(e->lora_id, Opt<int64_t>(want.at("lora_id")));
    EXPECT_EQ(e->lora_name, Opt<std::string>(want.at("lora_name")));
    EXPECT_EQ(e->medium, Opt<std::string>(want.at("medium")));
  } else if (type == "BlockRemoved") {
    const auto* e = std::get_if<BlockRemoved>(&got);
    ASSERT_NE(e, nullptr) << "want BlockRemoved";
    EXPECT_EQ(e->block_hashes, HexHashes(want.at("block_hashes")));
    EXPECT_EQ(e->medium, Opt<std::string>(want.at("medium")));
  } else {
    ASSERT_EQ(type, "AllBlocksCleared");
    EXPECT_TRUE(std::holds_alternative<AllBlocksCleared>(got)) << "want AllBlocksCleared";
  }
}

TEST(EventDecoderVectorsTest, EveryVectorFileHasAnExpectation) {
  const Json expected = Expected();
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kWireDir / "vectors")) {
    ++files;
    EXPECT_TRUE(expected.contains(entry.path().stem().string())) << entry.path();
  }
  EXPECT_GE(files, 10);
}

TEST(EventDecoderVectorsTest, EveryVectorDecodesExactlyAsExpected) {
  const Json expected = Expected();
  for (const auto& [name, payload] : Vectors()) {
    SCOPED_TRACE(name);
    const Json& want = expected.at(name);
    absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->ts, want.at("ts").get<double>());
    EXPECT_EQ(got->dp_rank, Opt<int64_t>(want.at("dp_rank")));
    ASSERT_EQ(got->events.size(), want.at("events").size());
    for (size_t i = 0; i < got->events.size(); ++i) {
      SCOPED_TRACE("event " + std::to_string(i));
      ExpectEventMatches(want.at("events")[i], got->events[i]);
    }
    EXPECT_EQ(got->skipped_events, 0u);
    // Documented vLLM fields kvindex ignores (extra_keys, group_idx, ...) are not "unknown".
    EXPECT_EQ(got->skipped_fields, 0u);
  }
}

TEST(EventDecoderVectorsTest, EveryProperPrefixOfEveryVectorIsTruncated) {
  for (const auto& [name, payload] : Vectors()) {
    for (size_t len = 0; len < payload.size(); ++len) {
      SCOPED_TRACE(name + " prefix " + std::to_string(len));
      absl::StatusOr<EventBatch> got = DecodeEventBatch(std::string_view(payload).substr(0, len));
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(DecodeErrorReasonOf(got.status()), DecodeErrorReason::kTruncated);
      EXPECT_THAT(std::string(got.status().message()), StartsWith("truncated: "));
    }
  }
}

TEST(EventDecoderVectorsTest, BytesAfterTheBatchAreTrailingBytes) {
  for (const auto& [name, payload] : Vectors()) {
    SCOPED_TRACE(name);
    for (const std::string& extra : {std::string("\xc0"), payload}) {
      absl::StatusOr<EventBatch> got = DecodeEventBatch(payload + extra);
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(DecodeErrorReasonOf(got.status()), DecodeErrorReason::kTrailingBytes);
      EXPECT_THAT(std::string(got.status().message()), StartsWith("trailing_bytes: "));
    }
  }
}

// Checks what every OK decode must satisfy.
void ExpectWellFormed(const EventBatch& batch) {
  for (const Event& event : batch.events) {
    if (const auto* e = std::get_if<BlockStored>(&event)) {
      if (!e->HasTokens()) continue;  // an offloaded chunk: hashes only
      EXPECT_EQ(e->token_ids.size(), uint64_t{e->block_size} * e->block_hashes.size());
      if (!e->block_hashes.empty()) {
        EXPECT_GT(e->block_size, 0u);
      }
      EXPECT_TRUE(e->extra_keys.empty() || e->extra_keys.size() == e->block_hashes.size());
    }
  }
  for (const BadEvent& bad : batch.bad_events) {
    EXPECT_THAT(bad.message, StartsWith(std::string(DecodeErrorReasonName(bad.reason)) + ": event " +
                                        std::to_string(bad.index) + ": "));
  }
}

TEST(EventDecoderVectorsTest, RandomMutationsOfEveryVectorReturnCleanly) {
  constexpr unsigned char kInteresting[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xc0, 0xc1,
                                            0xc4, 0xc6, 0xc9, 0xcf, 0xd3, 0xd8, 0xdb, 0xdc,
                                            0xdd, 0xde, 0xdf, 0xff};
  std::mt19937 rng(12345);
  int ok = 0, errors = 0;
  for (const auto& [name, payload] : Vectors()) {
    for (int round = 0; round < 5000; ++round) {
      std::string p = payload;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !p.empty(); ++e) {
        const size_t at = rng() % p.size();
        switch (rng() % 5) {
          case 0: p[at] = static_cast<char>(rng()); break;
          case 1: p[at] = static_cast<char>(p[at] ^ (1 << (rng() % 8))); break;
          case 2: p[at] = static_cast<char>(kInteresting[rng() % std::size(kInteresting)]); break;
          case 3: p.insert(p.begin() + at, static_cast<char>(rng())); break;
          case 4: p.erase(at, 1); break;
        }
      }
      absl::StatusOr<EventBatch> got = DecodeEventBatch(p);
      if (got.ok()) {
        ++ok;
        ExpectWellFormed(*got);
        continue;
      }
      ++errors;
      ASSERT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
      const std::string reason(DecodeErrorReasonName(DecodeErrorReasonOf(got.status())));
      ASSERT_THAT(std::string(got.status().message()), StartsWith(reason + ": "));
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(errors, 0);
}

// ---------------------------------------------------------------------------
// Hand-built payloads. (msgpack-c packs integral doubles as ints.)

std::string Pack(const std::function<void(Packer&)>& fill) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  fill(pk);
  return std::string(buf.data(), buf.size());
}

void PackStr(Packer& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

void PackBin(Packer& pk, std::string_view s) {
  pk.pack_bin(static_cast<uint32_t>(s.size()));
  pk.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
}

// [1.5, [events...], 0]; `events` packs exactly `num_events` values.
std::string Batch(uint32_t num_events, const std::function<void(Packer&)>& events) {
  return Pack([&](Packer& pk) {
    pk.pack_array(3);
    pk.pack_double(1.5);
    pk.pack_array(num_events);
    events(pk);
    pk.pack_uint8(0);
  });
}

// ["BlockStored", [hashes], nil, [1, 2, ...], block_size, nil, "GPU"].
void PackStored(Packer& pk, std::vector<uint64_t> hashes = {1, 2}, uint32_t block_size = 2) {
  pk.pack_array(7);
  PackStr(pk, "BlockStored");
  pk.pack(hashes);
  pk.pack_nil();
  pk.pack_array(block_size * static_cast<uint32_t>(hashes.size()));
  for (uint32_t t = 0; t < block_size * hashes.size(); ++t) pk.pack_uint32(t + 1);
  pk.pack_uint32(block_size);
  pk.pack_nil();
  PackStr(pk, "GPU");
}

// ["BlockRemoved", [hash], "GPU"].
void PackRemoved(Packer& pk, uint64_t hash) {
  pk.pack_array(3);
  PackStr(pk, "BlockRemoved");
  pk.pack_array(1);
  pk.pack_uint64(hash);
  PackStr(pk, "GPU");
}

// The single event of a batch, which must decode.
template <typename T>
T OnlyEvent(const std::string& payload) {
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
  EXPECT_TRUE(got.ok()) << got.status();
  if (!got.ok()) return T{};
  EXPECT_EQ(got->events.size(), 1u);
  const T* e = got->events.empty() ? nullptr : std::get_if<T>(&got->events[0]);
  EXPECT_NE(e, nullptr);
  return e ? *e : T{};
}

// Asserts that `payload` is rejected with `reason` and a message starting
// with `prefix`. An error located in an event ("<reason>: event N: ...")
// rejects that event only: the batch decodes, the event is its only entry in
// bad_events, and none of its content is among the decoded events. Any other
// error rejects the whole payload.
void ExpectError(const std::string& payload, DecodeErrorReason reason, std::string_view prefix,
                 const DecodeLimits& limits = {}) {
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload, limits);
  const std::string event_marker = std::string(DecodeErrorReasonName(reason)) + ": event ";
  if (!std::string_view(prefix).starts_with(event_marker)) {
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(DecodeErrorReasonOf(got.status()), reason) << got.status();
    EXPECT_THAT(std::string(got.status().message()), StartsWith(std::string(prefix)));
    return;
  }
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->bad_events.size(), 1u);
  const BadEvent& bad = got->bad_events[0];
  EXPECT_EQ(bad.reason, reason) << bad.message;
  EXPECT_THAT(bad.message, StartsWith(std::string(prefix)));
  EXPECT_THAT(std::string(prefix), StartsWith(event_marker + std::to_string(bad.index) + ":"));
}

TEST(EventDecoderTest, UnknownTagIsSkippedAndCountedAndOtherEventsKept) {
  const std::string payload = Batch(4, [](Packer& pk) {
    PackStored(pk);
    pk.pack_array(3);
    PackStr(pk, "BlockMoved");  // array layout, fields of any shape
    pk.pack_array(1);
    pk.pack_map(0);
    pk.pack_fix_int8(-1);
    pk.pack_map(1);
    PackStr(pk, "type");
    PackStr(pk, "SomethingNew");  // map layout
    PackRemoved(pk, 7);
  });
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->events.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<BlockStored>(got->events[0]));
  EXPECT_EQ(std::get<BlockRemoved>(got->events[1]).block_hashes, std::vector<uint64_t>{7});
  EXPECT_EQ(got->skipped_events, 2u);
  EXPECT_EQ(got->skipped_fields, 0u);
}

TEST(EventDecoderTest, UnknownMapKeysAreCountedAndDocumentedOnesAreNot) {
  const std::string payload = Batch(2, [](Packer& pk) {
    pk.pack_map(7);
    PackStr(pk, "future_field");  // unknown
    pk.pack_array(0);
    PackStr(pk, "block_size");
    pk.pack_uint8(1);
    PackStr(pk, "type");
    PackStr(pk, "BlockStored");
    PackStr(pk, "token_ids");
    pk.pack(std::vector<uint32_t>{9});
    pk.pack_uint8(42);  // unknown non-string key
    pk.pack_nil();
    PackStr(pk, "group_idx");  // documented, unused
    pk.pack_uint8(0);
    PackStr(pk, "block_hashes");
    pk.pack(std::vector<uint64_t>{5});
    pk.pack_map(2);
    PackStr(pk, "type");
    PackStr(pk, "AllBlocksCleared");
    PackStr(pk, "reason");  // unknown
    PackStr(pk, "reset");
  });
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->skipped_fields, 3u);
  EXPECT_EQ(got->skipped_events, 0u);
  ASSERT_EQ(got->events.size(), 2u);
  const BlockStored& e = std::get<BlockStored>(got->events[0]);
  EXPECT_EQ(e.block_hashes, std::vector<uint64_t>{5});
  EXPECT_EQ(e.token_ids, std::vector<uint32_t>{9});
  EXPECT_EQ(e.block_size, 1u);
  EXPECT_EQ(e.parent_block_hash, std::nullopt);  // absent optional fields
  EXPECT_EQ(e.lora_id, std::nullopt);
  EXPECT_EQ(e.medium, std::nullopt);
  EXPECT_EQ(e.lora_name, std::nullopt);
  EXPECT_TRUE(std::holds_alternative<AllBlocksCleared>(got->events[1]));
}

TEST(EventDecoderTest, TwoElementBatchHasNoDpRank) {
  const std::string payload = Pack([](Packer& pk) {
    pk.pack_array(2);
    pk.pack_double(2.25);
    pk.pack_array(1);
    PackRemoved(pk, 3);
  });
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ts, 2.25);
  EXPECT_EQ(got->dp_rank, std::nullopt);
  EXPECT_EQ(got->events.size(), 1u);
}

TEST(EventDecoderTest, ExtraBatchFieldsAndNilDpRankAreAccepted) {
  const std::string four = Pack([](Packer& pk) {
    pk.pack_array(4);
    pk.pack_double(1);
    pk.pack_array(0);
    pk.pack_uint8(3);
    PackStr(pk, "future");
  });
  absl::StatusOr<EventBatch> got = DecodeEventBatch(four);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->dp_rank, 3);

  const std::string nil_rank = Pack([](Packer& pk) {
    pk.pack_array(3);
    pk.pack_double(1);
    pk.pack_array(0);
    pk.pack_nil();
  });
  got = DecodeEventBatch(nil_rank);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->dp_rank, std::nullopt);
}

TEST(EventDecoderTest, TsMayBeAnyNumber) {
  const std::vector<std::pair<std::function<void(Packer&)>, double>> cases = {
      {[](Packer& pk) { pk.pack_uint32(1700000000); }, 1700000000.0},
      {[](Packer& pk) { pk.pack_fix_int8(-2); }, -2.0},
      {[](Packer& pk) { pk.pack_float(0.5f); }, 0.5},
      {[](Packer& pk) { pk.pack_double(1700000000.25); }, 1700000000.25},
  };
  for (const auto& [pack, want] : cases) {
    const std::function<void(Packer&)>& pack_ts = pack;  // clang 14 cannot capture a structured binding
    const std::string payload = Pack([&](Packer& pk) {
      pk.pack_array(2);
      pack_ts(pk);
      pk.pack_array(0);
    });
    absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->ts, want);
  }
}

TEST(EventDecoderTest, OlderAndNewerArrayLayoutsAreAccepted) {
  // vLLM <= 0.9: stops after lora_id (6 elements with the tag).
  const BlockStored v09 = OnlyEvent<BlockStored>(Batch(1, [](Packer& pk) {
    pk.pack_array(6);
    PackStr(pk, "BlockStored");
    pk.pack(std::vector<uint64_t>{1});
    pk.pack_uint8(9);
    pk.pack(std::vector<uint32_t>{4, 5});
    pk.pack_uint8(2);
    pk.pack_fix_int8(-1);
  }));
  EXPECT_EQ(v09.parent_block_hash, 9u);
  EXPECT_EQ(v09.lora_id, -1);
  EXPECT_EQ(v09.medium, std::nullopt);

  // A future engine: unknown trailing fields (after the 11 of 2026) of any type are ignored.
  const BlockStored future = OnlyEvent<BlockStored>(Batch(1, [](Packer& pk) {
    pk.pack_array(18);
    PackStr(pk, "BlockStored");
    pk.pack(std::vector<uint64_t>{1});
    pk.pack_nil();
    pk.pack(std::vector<uint32_t>{4});
    pk.pack_uint8(1);
    pk.pack_uint8(7);
    PackStr(pk, "CPU");
    PackStr(pk, "sql");
    pk.pack_nil();                      // extra_keys
    pk.pack_uint8(1);                   // group_idx
    PackStr(pk, "sliding_window");      // kv_cache_spec_kind
    pk.pack_uint16(4096);               // kv_cache_spec_sliding_window
    pk.pack_map(0);
    pk.pack_fix_int8(-3);
    PackBin(pk, "x");
    pk.pack_double(1);
    pk.pack_array(1);
    pk.pack_nil();
    pk.pack_true();
  }));
  EXPECT_EQ(future.lora_id, 7);
  EXPECT_EQ(future.medium, "CPU");
  EXPECT_EQ(future.lora_name, "sql");
  EXPECT_EQ(future.group_idx, 1u);
  EXPECT_EQ(future.kv_cache_spec_kind, "sliding_window");
  EXPECT_EQ(future.kv_cache_spec_sliding_window, 4096u);

  const BlockRemoved removed = OnlyEvent<BlockRemoved>(Batch(1, [](Packer& pk) {
    pk.pack_array(6);
    PackStr(pk, "BlockRemoved");
    pk.pack(std::vector<uint64_t>{8});
    pk.pack_nil();
    pk.pack_uint8(3);  // group_idx
    pk.pack_uint8(0);
    PackStr(pk, "future");
  }));
  EXPECT_EQ(removed.block_hashes, std::vector<uint64_t>{8});
  EXPECT_EQ(removed.medium, std::nullopt);
  EXPECT_EQ(removed.group_idx, 3u);
}

TEST(EventDecoderTest, IntHashesOfEveryWidthAndSign) {
  const BlockRemoved e = OnlyEvent<BlockRemoved>(Batch(1, [](Packer& pk) {
    pk.pack_array(2);
    PackStr(pk, "BlockRemoved");
    pk.pack_array(11);
    pk.pack_uint8(5);  // positive fixint
    pk.pack_fix_uint8(200);
    pk.pack_fix_uint16(60000);
    pk.pack_fix_uint32(4000000000u);
    pk.pack_fix_uint64(std::numeric_limits<uint64_t>::max());
    pk.pack_fix_int64(5);  // signed format, positive value
    pk.pack_int8(-5);      // negative fixint
    pk.pack_fix_int8(-1);
    pk.pack_fix_int16(-2);
    pk.pack_fix_int32(-3);
    pk.pack_fix_int64(std::numeric_limits<int64_t>::min());
  }));
  EXPECT_EQ(e.block_hashes,
            (std::vector<uint64_t>{5, 200, 60000, 4000000000u, 0xffffffffffffffff, 5,
                                   0xfffffffffffffffb, 0xffffffffffffffff, 0xfffffffffffffffe,
                                   0xfffffffffffffffd, 0x8000000000000000}));
}

TEST(EventDecoderTest, BytesHashesAreTheirLastEightBytesBigEndian) {
  const std::string digest32 = [] {
    std::string s;
    for (int i = 0; i < 32; ++i) s.push_back(static_cast<char>(i));
    return s;
  }();
  const BlockRemoved e = OnlyEvent<BlockRemoved>(Batch(1, [&](Packer& pk) {
    pk.pack_array(2);
    PackStr(pk, "BlockRemoved");
    pk.pack_array(5);
    PackBin(pk, "\x01");
    PackBin(pk, "\x01\x02\x03");
    PackBin(pk, "\x01\x02\x03\x04\x05\x06\x07\x08");
    PackBin(pk, std::string_view("\xff\x01\x02\x03\x04\x05\x06\x07\x08", 9));
    PackBin(pk, digest32);
  }));
  EXPECT_EQ(e.block_hashes,
            (std::vector<uint64_t>{0x01, 0x010203, 0x0102030405060708, 0x0102030405060708,
                                   0x18191a1b1c1d1e1f}));
}

TEST(EventDecoderTest, EmptyBytesHashIsAnError) {
  ExpectError(Batch(1,
                    [](Packer& pk) {
                      pk.pack_array(2);
                      PackStr(pk, "BlockRemoved");
                      pk.pack_array(2);
                      pk.pack_uint8(1);
                      PackBin(pk, "");
                    }),
              DecodeErrorReason::kWrongType, "wrong_type: event 0: block_hashes: hash 1: empty bytes");
}

TEST(EventDecoderTest, BadTokenCountNamesTheEvent) {
  const std::string payload = Batch(3, [](Packer& pk) {
    PackStored(pk);
    PackRemoved(pk, 1);
    pk.pack_array(5);
    PackStr(pk, "BlockStored");
    pk.pack(std::vector<uint64_t>{1, 2});
    pk.pack_nil();
    pk.pack(std::vector<uint32_t>{1, 2, 3});
    pk.pack_uint8(2);
  });
  ExpectError(payload, DecodeErrorReason::kBadTokenCount,
              "bad_token_count: event 2: token_ids: 3 tokens for 2 blocks of 2");
  // The events beside it are kept, in order.
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->events.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<BlockStored>(got->events[0]));
  EXPECT_TRUE(std::holds_alternative<BlockRemoved>(got->events[1]));
}

TEST(EventDecoderTest, ZeroBlockSizeWithHashesIsAnError) {
  ExpectError(Batch(1,
                    [](Packer& pk) {
                      pk.pack_array(5);
                      PackStr(pk, "BlockStored");
                      pk.pack(std::vector<uint64_t>{1, 2});
                      pk.pack_nil();
                      pk.pack(std::vector<uint32_t>{1, 2});
                      pk.pack_uint8(0);
                    }),
              DecodeErrorReason::kBadTokenCount,
              "bad_token_count: event 0: token_ids: 2 tokens for 2 blocks of 0");
  // No tokens at all is an offloaded chunk, whose block size some engines send as 0.
  EXPECT_FALSE(OnlyEvent<BlockStored>(Batch(1, [](Packer& pk) { PackStored(pk, {1, 2}, 0); })).HasTokens());
  // Without hashes there is nothing to contradict: an empty event.
  const BlockStored empty = OnlyEvent<BlockStored>(Batch(1, [](Packer& pk) { PackStored(pk, {}, 0); }));
  EXPECT_TRUE(empty.block_hashes.empty());
}

TEST(EventDecoderTest, TokenIdsMustFitUint32) {
  for (const int64_t bad : {int64_t{1} << 32, int64_t{-1}}) {
    const std::string payload = Batch(1, [&](Packer& pk) {
      pk.pack_array(5);
      PackStr(pk, "BlockStored");
      pk.pack(std::vector<uint64_t>{1});
      pk.pack_nil();
      pk.pack_array(2);
      pk.pack_uint32(std::numeric_limits<uint32_t>::max());
      pk.pack_int64(bad);
      pk.pack_uint8(2);
    });
    ExpectError(payload, DecodeErrorReason::kTooLarge,
                "too_large: event 0: token_ids: token 1 does not fit uint32");
  }
}

struct WrongTypeCase {
  std::string name;
  std::string payload;
  std::string message_prefix;
};

// [1.5, [event], 0] with `event` = ["BlockStored", ...] where field `bad`
// (1-based, after the tag) is replaced by `pack_bad`.
std::string StoredWith(int bad, const std::function<void(Packer&)>& pack_bad) {
  return Batch(1, [&](Packer& pk) {
    pk.pack_array(8);
    PackStr(pk, "BlockStored");
    const std::function<void(Packer&)> fields[] = {
        [](Packer& p) { p.pack(std::vector<uint64_t>{1}); },
        [](Packer& p) { p.pack_nil(); },
        [](Packer& p) { p.pack(std::vector<uint32_t>{1, 2}); },
        [](Packer& p) { p.pack_uint8(2); },
        [](Packer& p) { p.pack_nil(); },
        [](Packer& p) { PackStr(p, "GPU"); },
        [](Packer& p) { p.pack_nil(); },
    };
    for (int i = 1; i <= 7; ++i) (i == bad ? pack_bad : fields[i - 1])(pk);
  });
}

std::vector<WrongTypeCase> WrongTypeCases() {
  auto str = [](Packer& pk) { PackStr(pk, "x"); };
  auto uint = [](Packer& pk) { pk.pack_uint8(1); };
  return {
      {"BatchIsMap", Pack([](Packer& pk) { pk.pack_map(0); }),
       "wrong_type: batch: expected array, got map"},
      {"BatchHasOneElement", Pack([](Packer& pk) { pk.pack_array(1); pk.pack_double(1); }),
       "wrong_type: batch: expected [ts, events, dp_rank?], got 1 elements"},
      {"TsIsStr", Pack([](Packer& pk) { pk.pack_array(2); PackStr(pk, "now"); pk.pack_array(0); }),
       "wrong_type: ts: expected number, got str"},
      {"TsIsNil", Pack([](Packer& pk) { pk.pack_array(2); pk.pack_nil(); pk.pack_array(0); }),
       "wrong_type: ts: expected number, got nil"},
      {"EventsIsInt", Pack([](Packer& pk) { pk.pack_array(2); pk.pack_double(1); pk.pack_uint8(1); }),
       "wrong_type: events: expected array, got uint"},
      {"DpRankIsStr",
       Pack([](Packer& pk) { pk.pack_array(3); pk.pack_double(1); pk.pack_array(0); PackStr(pk, "0"); }),
       "wrong_type: dp_rank: expected non-negative int, got str"},
      {"EventIsInt", Batch(1, uint), "wrong_type: event 0: expected array or map, got uint"},
      {"EventIsEmptyArray", Batch(1, [](Packer& pk) { pk.pack_array(0); }),
       "wrong_type: event 0: empty event array"},
      {"TagIsInt", Batch(1, [](Packer& pk) { pk.pack_array(1); pk.pack_uint8(0); }),
       "wrong_type: event 0: type: expected str, got uint"},
      {"MapWithoutType",
       Batch(1, [](Packer& pk) { pk.pack_map(1); PackStr(pk, "block_hashes"); pk.pack_array(0); }),
       "wrong_type: event 0: map without \"type\""},
      {"HashesIsStr", StoredWith(1, str), "wrong_type: event 0: block_hashes: expected array, got str"},
      {"HashIsStr", StoredWith(1, [](Packer& pk) { pk.pack_array(1); PackStr(pk, "h"); }),
       "wrong_type: event 0: block_hashes: hash 0: expected int or bin, got str"},
      {"ParentIsStr", StoredWith(2, str),
       "wrong_type: event 0: parent_block_hash: expected int or bin, got str"},
      {"TokensIsStr", StoredWith(3, str), "wrong_type: event 0: token_ids: expected array, got str"},
      {"TokenIsFloat", StoredWith(3, [](Packer& pk) { pk.pack_array(2); pk.pack_uint8(1); pk.pack_double(2.5); }),
       "wrong_type: event 0: token_ids: token 1: expected int, got float64"},
      {"BlockSizeIsNegative", StoredWith(4, [](Packer& pk) { pk.pack_fix_int8(-2); }),
       "wrong_type: event 0: block_size: expected non-negative int, got negative int"},
      {"LoraIdIsStr", StoredWith(5, str), "wrong_type: event 0: lora_id: expected int or nil, got str"},
      {"MediumIsInt", StoredWith(6, uint), "wrong_type: event 0: medium: expected str or nil, got uint"},
      {"LoraNameIsInt", StoredWith(7, uint), "wrong_type: event 0: lora_name: expected str or nil, got uint"},
      {"StoredWithoutBlockSize",
       Batch(1, [](Packer& pk) {
         pk.pack_array(4);
         PackStr(pk, "BlockStored");
         pk.pack_array(0);
         pk.pack_nil();
         pk.pack_array(0);
       }),
       "wrong_type: event 0: block_size: missing"},
      {"RemovedWithoutHashes", Batch(1, [](Packer& pk) { pk.pack_array(1); PackStr(pk, "BlockRemoved"); }),
       "wrong_type: event 0: block_hashes: missing"},
      {"RemovedMediumIsInt",
       Batch(1, [&](Packer& pk) { pk.pack_array(3); PackStr(pk, "BlockRemoved"); pk.pack_array(0); uint(pk); }),
       "wrong_type: event 0: medium: expected str or nil, got uint"},
  };
}

TEST(EventDecoderTest, WrongTypesAreRejectedWithTheirLocation) {
  for (const WrongTypeCase& c : WrongTypeCases()) {
    SCOPED_TRACE(c.name);
    ExpectError(c.payload, DecodeErrorReason::kWrongType, c.message_prefix);
  }
}

TEST(EventDecoderTest, AbsurdDeclaredSizesFailFastWithoutAllocating) {
  // A 10-byte payload declaring 2^32 - 1 elements or bytes.
  for (const char* header : {"\xdd", "\xdf", "\xdb", "\xc6", "\xc9"}) {
    SCOPED_TRACE(static_cast<int>(static_cast<unsigned char>(header[0])));
    const std::string payload = std::string(header) + "\xff\xff\xff\xff" + std::string(5, '\0');
    ExpectError(payload, DecodeErrorReason::kTooLarge, "too_large: value at byte 0 declares 4294967295");
  }
  // Sizes that fit the limits but not the payload are truncation.
  ExpectError(std::string("\x92\x00\xdd\x00\x10\x00\x00", 7), DecodeErrorReason::kTruncated,
              "truncated: ");
  // 20000 array16 headers each declaring 65535 elements: msgpack-c alone would
  // allocate ~30 GB before noticing that the elements are missing.
  // Both messages come from the structure scan, which allocates nothing: the
  // payload never reached msgpack-c (whose own errors read differently).
  std::string nested;
  for (int i = 0; i < 20000; ++i) nested += "\xdc\xff\xff";
  ExpectError(nested, DecodeErrorReason::kTooLarge, "too_large: nesting deeper than 2048 at byte 6144");
  // 2047 levels of 65535 elements, then too few elements to fill them.
  ExpectError(nested.substr(0, 2047 * 3) + std::string(100000, '\xc0'), DecodeErrorReason::kTruncated,
              "truncated: payload ends inside a value at byte ");
}

// [1.5, [["Future", [[...[nil]...]]]], 0] with `levels` arrays in the field.
std::string NestedUnknownEvent(int levels) {
  return Batch(1, [&](Packer& pk) {
    pk.pack_array(2);
    PackStr(pk, "Future");
    for (int i = 0; i < levels; ++i) pk.pack_array(1);
    pk.pack_nil();
  });
}

TEST(EventDecoderTest, NestingIsLimitedTo2048Levels) {
  // batch, events and the event are 3 levels.
  absl::StatusOr<EventBatch> got = DecodeEventBatch(NestedUnknownEvent(2045));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->skipped_events, 1u);
  ExpectError(NestedUnknownEvent(2046), DecodeErrorReason::kTooLarge,
              "too_large: nesting deeper than 2048");
}

TEST(EventDecoderTest, DecodeLimitsAreEnforced) {
  const std::string stored = Batch(3, [](Packer& pk) {
    PackStored(pk, {1, 2}, 2);
    PackRemoved(pk, 1);
    PackRemoved(pk, 2);
  });
  ASSERT_TRUE(DecodeEventBatch(stored).ok());
  ExpectError(stored, DecodeErrorReason::kTooLarge, "too_large: events: 3 events exceed the limit of 2",
              {.max_events = 2});
  ExpectError(stored, DecodeErrorReason::kTooLarge,
              "too_large: event 0: block_hashes: 2 blocks exceed the limit of 1",
              {.max_blocks_per_event = 1});
  ExpectError(stored, DecodeErrorReason::kTooLarge, "too_large: event 0: block_size: 2 exceeds 1",
              {.max_block_size = 1});
  ExpectError(stored, DecodeErrorReason::kTooLarge, "too_large: payload of", {.max_payload_bytes = 10});
  ExpectError(Pack([](Packer& pk) {
                pk.pack_array(3);
                pk.pack_double(1);
                pk.pack_array(0);
                pk.pack_uint32(70000);
              }),
              DecodeErrorReason::kTooLarge, "too_large: dp_rank: 70000 exceeds 65535");
}

// {"type": "BlockStored", "block_hashes": [1], "token_ids": [1, 2], "block_size": 2,
//  <key>: <value packed by `value`>}: one map event with one 2026 field.
std::string StoredMapWith(std::string_view key, const std::function<void(Packer&)>& value) {
  return Batch(1, [&](Packer& pk) {
    pk.pack_map(5);
    PackStr(pk, "type");
    PackStr(pk, "BlockStored");
    PackStr(pk, "block_hashes");
    pk.pack(std::vector<uint64_t>{1});
    PackStr(pk, "token_ids");
    pk.pack(std::vector<uint32_t>{1, 2});
    PackStr(pk, "block_size");
    pk.pack_uint8(2);
    PackStr(pk, key);
    value(pk);
  });
}

TEST(EventDecoderTest, ExtraKeysOfEveryItemKindAreKeptInOrder) {
  const BlockStored e = OnlyEvent<BlockStored>(StoredMapWith("extra_keys", [](Packer& pk) {
    pk.pack_array(1);
    pk.pack_array(6);
    PackStr(pk, "lora");
    pk.pack_array(2);
    PackStr(pk, "img");
    pk.pack_fix_int8(-3);
    pk.pack_uint64(~uint64_t{0});
    PackBin(pk, "\x01\xff");
    pk.pack_nil();
    pk.pack_array(0);
  }));
  ASSERT_EQ(e.extra_keys.size(), 1u);
  const ExtraKey& keys = e.extra_keys[0];
  ASSERT_EQ(keys.kind, ExtraKey::Kind::kList);
  ASSERT_EQ(keys.items.size(), 6u);
  EXPECT_EQ(keys.items[0], (ExtraKey{.kind = ExtraKey::Kind::kStr, .bytes = "lora"}));
  ASSERT_EQ(keys.items[1].items.size(), 2u);
  EXPECT_EQ(keys.items[1].items[1], (ExtraKey{.kind = ExtraKey::Kind::kInt, .number = -3}));
  EXPECT_EQ(keys.items[2],
            (ExtraKey{.kind = ExtraKey::Kind::kInt, .number = -1, .number_unsigned = true}));
  EXPECT_EQ(keys.items[3], (ExtraKey{.kind = ExtraKey::Kind::kBytes, .bytes = "\x01\xff"}));
  EXPECT_EQ(keys.items[4].kind, ExtraKey::Kind::kNil);
  EXPECT_EQ(keys.items[5].kind, ExtraKey::Kind::kList);
  EventBatch batch;
  batch.events.push_back(e);
  const Json json = Json::parse(EventBatchToJson(batch));
  EXPECT_EQ(json["events"][0]["extra_keys"],
            Json::parse(R"([["lora", ["img", -3], 18446744073709551615, "0x01ff", null, []]])"));
}

TEST(EventDecoderTest, OffloadedChunksWithoutTokensDecode) {
  // [GPU store, offload store (no tokens, nil parent, a chunk of 16 GPU blocks), GPU removal].
  const std::string payload = Batch(3, [](Packer& pk) {
    PackStored(pk, {1, 2}, 2);
    pk.pack_array(7);
    PackStr(pk, "BlockStored");
    pk.pack(std::vector<uint64_t>{2});
    pk.pack_nil();
    pk.pack_array(0);
    pk.pack_uint8(32);
    pk.pack_nil();
    PackStr(pk, "CPU");
    PackRemoved(pk, 1);
  });
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->events.size(), 3u);
  EXPECT_TRUE(got->bad_events.empty());
  const auto* chunk = std::get_if<BlockStored>(&got->events[1]);
  ASSERT_NE(chunk, nullptr);
  EXPECT_FALSE(chunk->HasTokens());
  EXPECT_EQ(chunk->block_size, 32u);
  EXPECT_EQ(chunk->medium, "CPU");
  EXPECT_TRUE(std::get<BlockStored>(got->events[0]).HasTokens());
}

TEST(EventDecoderTest, AbsurdNewFieldsSkipTheirEventOnly) {
  ExpectError(StoredMapWith("group_idx", [](Packer& pk) { pk.pack_uint32(1000000000); }),
              DecodeErrorReason::kTooLarge, "too_large: event 0: group_idx: 1000000000 exceeds 1023");
  ExpectError(StoredMapWith("kv_cache_spec_sliding_window", [](Packer& pk) { pk.pack_uint8(0); }),
              DecodeErrorReason::kBadValue,
              "bad_value: event 0: kv_cache_spec_sliding_window: a window of 0 tokens");
  ExpectError(StoredMapWith("extra_keys",
                            [](Packer& pk) {
                              pk.pack_array(1);
                              for (int i = 0; i < 1000; ++i) pk.pack_array(1);
                              pk.pack_nil();
                            }),
              DecodeErrorReason::kTooLarge, "too_large: event 0: extra_keys: lists nested deeper than 8");
  const std::string ten_mb(10 << 20, 'x');
  ExpectError(StoredMapWith("extra_keys",
                            [&](Packer& pk) {
                              pk.pack_array(1);
                              pk.pack_array(1);
                              PackStr(pk, ten_mb);
                            }),
              DecodeErrorReason::kTooLarge, "too_large: event 0: extra_keys: more than 1048576 bytes");
  // 200,000 nils (one byte each) would be 200,000 ExtraKeys: each list item costs 16 bytes of the budget.
  ExpectError(StoredMapWith("extra_keys",
                            [](Packer& pk) {
                              pk.pack_array(1);
                              pk.pack_array(200000);
                              for (int i = 0; i < 200000; ++i) pk.pack_nil();
                            }),
              DecodeErrorReason::kTooLarge, "too_large: event 0: extra_keys: more than 1048576 bytes");
  ExpectError(StoredMapWith("extra_keys", [](Packer& pk) { pk.pack_array(2); pk.pack_nil(); pk.pack_nil(); }),
              DecodeErrorReason::kBadValue, "bad_value: event 0: extra_keys: 2 entries for 1 blocks");
  ExpectError(StoredMapWith("extra_keys", [](Packer& pk) { pk.pack_array(1); pk.pack_double(1.5); }),
              DecodeErrorReason::kWrongType,
              "wrong_type: event 0: extra_keys: block 0: expected array or nil, got float64");
  // An offloaded chunk of 10^6 GPU blocks of 32 tokens.
  ExpectError(Batch(1,
                    [](Packer& pk) {
                      pk.pack_array(7);
                      PackStr(pk, "BlockStored");
                      pk.pack(std::vector<uint64_t>{2});
                      pk.pack_nil();
                      pk.pack_array(0);
                      pk.pack_uint32(32000000);
                      pk.pack_nil();
                      PackStr(pk, "CPU");
                    }),
              DecodeErrorReason::kTooLarge, "too_large: event 0: block_size: 32000000 exceeds 1048576");
}

TEST(EventDecoderTest, BadEventsAreListedWithTheirIndexAndTheRestIsApplied) {
  const std::string payload = Batch(4, [](Packer& pk) {
    PackRemoved(pk, 1);
    pk.pack_array(2);
    PackStr(pk, "BlockRemoved");
    PackStr(pk, "not a list");
    PackStored(pk, {5}, 2);
    pk.pack_map(1);
    PackStr(pk, "type");
    pk.pack_uint8(1);
  });
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->events.size(), 2u);
  EXPECT_EQ(std::get<BlockRemoved>(got->events[0]).block_hashes, std::vector<uint64_t>{1});
  EXPECT_EQ(std::get<BlockStored>(got->events[1]).block_hashes, std::vector<uint64_t>{5});
  ASSERT_EQ(got->bad_events.size(), 2u);
  EXPECT_EQ(got->bad_events[0].index, 1u);
  EXPECT_EQ(got->bad_events[0].message, "wrong_type: event 1: block_hashes: expected array, got str");
  EXPECT_EQ(got->bad_events[1].index, 3u);
  EXPECT_EQ(got->bad_events[1].reason, DecodeErrorReason::kWrongType);
  EXPECT_EQ(got->bad_events_by_reason[static_cast<size_t>(DecodeErrorReason::kWrongType)], 2u);
  const Json json = Json::parse(EventBatchToJson(*got));
  EXPECT_EQ(json["bad_events"][0]["index"], 1);
  EXPECT_EQ(json["bad_events"][1]["error"], "wrong_type: event 3: type: expected str, got uint");
  EXPECT_FALSE(json.contains("bad_events_not_listed"));
}

TEST(EventDecoderTest, ManyBadEventsAreCountedAndTheFirst16Listed) {
  // 100,000 one-byte events (nil), then one good one.
  const std::string payload = Batch(100001, [](Packer& pk) {
    for (int i = 0; i < 100000; ++i) pk.pack_nil();
    PackRemoved(pk, 9);
  });
  absl::StatusOr<EventBatch> got = DecodeEventBatch(payload);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->events.size(), 1u);
  EXPECT_EQ(got->bad_events.size(), 16u);
  EXPECT_EQ(got->bad_events[15].index, 15u);
  EXPECT_EQ(got->bad_events_by_reason[static_cast<size_t>(DecodeErrorReason::kWrongType)], 100000u);
  const Json json = Json::parse(EventBatchToJson(*got));
  EXPECT_EQ(json["bad_events_not_listed"], 100000 - 16);
}

TEST(EventDecoderTest, InvalidMsgpackIsMalformed) {
  ExpectError(std::string("\x92\xc1\x90", 3), DecodeErrorReason::kMalformed,
              "malformed: invalid msgpack byte 0xc1 at byte 1");
}

TEST(EventDecoderTest, EmptyPayloadIsTruncated) {
  ExpectError("", DecodeErrorReason::kTruncated, "truncated: ");
}

TEST(DecodeErrorReasonTest, NamesAreStableAndRecoverable) {
  const std::pair<DecodeErrorReason, std::string_view> all[] = {
      {DecodeErrorReason::kTruncated, "truncated"},
      {DecodeErrorReason::kTrailingBytes, "trailing_bytes"},
      {DecodeErrorReason::kWrongType, "wrong_type"},
      {DecodeErrorReason::kBadTokenCount, "bad_token_count"},
      {DecodeErrorReason::kTooLarge, "too_large"},
      {DecodeErrorReason::kMalformed, "malformed"},
      {DecodeErrorReason::kBadValue, "bad_value"},
  };
  for (const auto& [reason, name] : all) {
    EXPECT_EQ(DecodeErrorReasonName(reason), name);
    EXPECT_EQ(DecodeErrorReasonOf(absl::InvalidArgumentError(std::string(name) + ": x")), reason);
  }
}

TEST(DecodeErrorReasonTest, OtherStatusesAreMalformed) {
  EXPECT_EQ(DecodeErrorReasonOf(absl::UnavailableError("truncated: x")), DecodeErrorReason::kMalformed);
  EXPECT_EQ(DecodeErrorReasonOf(absl::InvalidArgumentError("something else")),
            DecodeErrorReason::kMalformed);
}

// ---------------------------------------------------------------------------
// EventBatchToJson.

TEST(EventJsonTest, VectorsRenderAsExpectedJson) {
  const Json expected = Expected();
  for (const auto& [name, payload] : Vectors()) {
    SCOPED_TRACE(name);
    absl::StatusOr<EventBatch> batch = DecodeEventBatch(payload);
    ASSERT_TRUE(batch.ok()) << batch.status();
    const Json got = Json::parse(EventBatchToJson(*batch));
    const Json& want = expected.at(name);
    EXPECT_EQ(got.at("ts"), want.at("ts"));
    EXPECT_EQ(got.at("dp_rank"), want.at("dp_rank"));
    EXPECT_EQ(testutil::EventsAsListed(got.at("events"), want.at("events")), want.at("events"));
    EXPECT_EQ(got.at("skipped_events"), 0);
    EXPECT_EQ(got.at("skipped_fields"), 0);
  }
}

TEST(EventJsonTest, FieldsAreInWireOrderAndInvalidUtf8IsReplaced) {
  EventBatch batch;
  batch.ts = 1;
  batch.skipped_events = 2;
  batch.events.push_back(BlockStored{.block_hashes = {0xa},
                                     .parent_block_hash = 0xb,
                                     .token_ids = {1},
                                     .block_size = 1,
                                     .lora_id = 4,
                                     .medium = "GPU",
                                     .lora_name = "bad\xff"});
  const std::string text = EventBatchToJson(batch, -1);
  EXPECT_EQ(text,
            "{\"ts\":1.0,\"dp_rank\":null,\"events\":[{\"type\":\"BlockStored\","
            "\"block_hashes\":[\"0x000000000000000a\"],\"parent_block_hash\":\"0x000000000000000b\","
            "\"token_ids\":[1],\"block_size\":1,\"lora_id\":4,\"lora_name\":\"bad\xef\xbf\xbd\","
            "\"medium\":\"GPU\"}],\"skipped_events\":2,\"skipped_fields\":0}");
}

}  // namespace
}  // namespace kvindex
