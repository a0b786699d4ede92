#include "server/match_request_parser.h"
#include "tests/server/deterministic_bytes.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace kvindex::server {
namespace {

void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void AppendTag(std::string* out, uint32_t field, uint32_t wire_type) { AppendVarint(out, field << 3 | wire_type); }

std::string PackedTokens(const std::vector<uint64_t>& values) {
  std::string payload;
  for (uint64_t v : values) AppendVarint(&payload, v);
  std::string out;
  AppendTag(&out, 3, 2);
  AppendVarint(&out, payload.size());
  return out + payload;
}

std::string UnpackedToken(uint64_t v) {
  std::string out;
  AppendTag(&out, 3, 0);
  AppendVarint(&out, v);
  return out;
}

// Parses `wire` both ways and expects the same verdict and, on success, the same message.
void ExpectSameAsProtobuf(const std::string& wire) {
  v1::MatchRequest expected;
  const bool expected_ok = expected.ParseFromString(wire);
  v1::MatchRequest got;
  got.set_model("stale");  // the parser clears what was there
  ASSERT_EQ(ParseMatchRequest(wire, &got), expected_ok) << "input of " << wire.size() << " bytes";
  if (expected_ok) {
    EXPECT_EQ(testing::DeterministicBytes(got), testing::DeterministicBytes(expected))
        << "got:\n" << got.DebugString() << "\nexpected:\n" << expected.DebugString();
  }
}

v1::MatchRequest FullRequest(const std::vector<uint32_t>& tokens) {
  v1::MatchRequest request;
  request.set_model("llama-3-8b");
  request.set_lora_name("sql-adapter");
  request.mutable_token_ids()->Assign(tokens.begin(), tokens.end());
  request.add_pods("default/pod-a");
  request.add_pods("default/pod-b");
  (*request.mutable_medium_weights())["GPU"] = 1.0;
  (*request.mutable_medium_weights())["CPU"] = 0.5;
  return request;
}

TEST(MatchRequestParserTest, ParsesWhatTheClientSerializesLikeProtobuf) {
  const std::vector<uint32_t> tokens = {0,       1,       127,        128,        16383,     16384,      128000,
                                        2097151, 2097152, 268435455u, 268435456u, 4000000000u, UINT32_MAX};
  const v1::MatchRequest request = FullRequest(tokens);
  const std::string wire = request.SerializeAsString();
  v1::MatchRequest got;
  ASSERT_TRUE(ParseMatchRequest(wire, &got));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, request)) << got.DebugString();
  EXPECT_EQ(std::vector<uint32_t>(got.token_ids().begin(), got.token_ids().end()), tokens);
}

TEST(MatchRequestParserTest, EveryTokenCountAndWidthAroundTheWordBoundaries) {
  std::mt19937_64 rng(7);
  for (size_t n = 0; n <= 40; ++n) {
    for (int round = 0; round < 20; ++round) {
      std::vector<uint32_t> tokens(n);
      for (uint32_t& t : tokens) {
        const int bits = static_cast<int>(rng() % 33);  // 1- to 5-byte varints
        t = bits == 0 ? 0 : static_cast<uint32_t>(rng() >> (64 - bits));
      }
      ExpectSameAsProtobuf(FullRequest(tokens).SerializeAsString());
    }
  }
}

TEST(MatchRequestParserTest, TokensInSeveralRunsPackedAndUnpackedKeepTheirOrder) {
  std::string wire;
  AppendTag(&wire, 1, 2);
  AppendVarint(&wire, 5);
  wire += "model";
  wire += PackedTokens({1, 300, 70000});
  wire += UnpackedToken(5);
  AppendTag(&wire, 5, 2);
  AppendVarint(&wire, 5);
  wire += "ns/pd";
  wire += PackedTokens({});
  wire += UnpackedToken(4000000000u);
  wire += PackedTokens({9, 10});
  ExpectSameAsProtobuf(wire);
  v1::MatchRequest got;
  ASSERT_TRUE(ParseMatchRequest(wire, &got));
  EXPECT_EQ(std::vector<uint32_t>(got.token_ids().begin(), got.token_ids().end()),
            (std::vector<uint32_t>{1, 300, 70000, 5, 4000000000u, 9, 10}));
  EXPECT_EQ(got.model(), "model");
  EXPECT_EQ(got.pods(0), "ns/pd");
}

TEST(MatchRequestParserTest, OverlongAndWideVarintsTruncateTo32BitsLikeProtobuf) {
  ExpectSameAsProtobuf(PackedTokens({}) + std::string("\x1a\x03\x80\x80\x00", 5));  // 0 in 3 bytes
  for (uint64_t v : {uint64_t{1} << 32, (uint64_t{1} << 35) - 1, uint64_t{1} << 35, uint64_t{1} << 42,
                     (uint64_t{1} << 63) + 5, UINT64_MAX}) {
    ExpectSameAsProtobuf(PackedTokens({1, v, 2}));
    ExpectSameAsProtobuf(UnpackedToken(v));
    // Deep inside a long run, where the decoder reads whole chunks directly.
    std::vector<uint64_t> long_run(200, 300000);
    long_run[100] = v;
    ExpectSameAsProtobuf(PackedTokens(long_run));
  }
}

TEST(MatchRequestParserTest, MalformedInputFailsLikeProtobuf) {
  const std::string good = FullRequest({1, 200000, 3}).SerializeAsString();
  for (size_t cut = 0; cut < good.size(); ++cut) ExpectSameAsProtobuf(good.substr(0, cut));
  ExpectSameAsProtobuf(std::string("\x1a\x05\x01\x02", 4));          // packed length past the end
  ExpectSameAsProtobuf(std::string("\x1a\x02\x01\x82", 4));          // run ends inside a varint
  ExpectSameAsProtobuf(std::string("\x1a\x0b") + std::string(11, '\xff'));  // varint of 11 bytes
  ExpectSameAsProtobuf(std::string("\x0a\x02\xc3\x28", 4));          // model not UTF-8
  ExpectSameAsProtobuf(std::string("\x1d\x01\x02\x03\x04", 5));      // token_ids as fixed32
  ExpectSameAsProtobuf(std::string("\x1b\x1c", 2));                  // token_ids as a group
  ExpectSameAsProtobuf(std::string("\x00\x01", 2));                  // field number 0
  ExpectSameAsProtobuf(std::string("\xf8\xff\xff\xff\xff\x01\x00", 7));  // tag past 32 bits
}

TEST(MatchRequestParserTest, ReadsARequestSplitOverSlicesAsGrpcDeliversIt) {
  const v1::MatchRequest request = FullRequest({5, 300000, 7, 1u << 31});
  const std::string wire = request.SerializeAsString();
  const grpc::Slice slices[] = {grpc::Slice(wire.substr(0, 3)), grpc::Slice(wire.substr(3, 20)),
                                grpc::Slice(wire.substr(23))};
  const grpc::ByteBuffer buffer(slices, 3);
  v1::MatchRequest got;
  ASSERT_TRUE(ParseMatchRequest(buffer, &got));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, request)) << got.DebugString();

  const grpc::ByteBuffer none;  // a message of no bytes may arrive as no buffer
  ASSERT_TRUE(ParseMatchRequest(none, &got));
  EXPECT_EQ(got.ByteSizeLong(), 0u);
}

TEST(MatchRequestParserTest, EmptyInputIsAnEmptyRequest) {
  v1::MatchRequest got;
  got.add_token_ids(7);
  ASSERT_TRUE(ParseMatchRequest("", &got));
  EXPECT_EQ(got.token_ids_size(), 0);
}

TEST(MatchRequestParserTest, RandomMutationsGetProtobufsVerdictAndMessage) {
  google::protobuf::LogSilencer quiet;  // protobuf logs every invalid UTF-8 string it meets
  std::mt19937_64 rng(11);
  std::vector<uint32_t> tokens(64);
  for (uint32_t& t : tokens) t = static_cast<uint32_t>(rng() % 200000);
  v1::MatchRequest base = FullRequest(tokens);
  base.add_block_hashes(0x1234567890abcdefULL);
  const std::string good = base.SerializeAsString() + UnpackedToken(77) + PackedTokens({1, 2, 1u << 30});
  for (int i = 0; i < 20000; ++i) {
    std::string wire = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % wire.size();
      switch (rng() % 4) {
        case 0:
          wire[at] = static_cast<char>(rng());
          break;
        case 1:
          wire[at] = static_cast<char>(wire[at] ^ 0x80);  // flip a stop bit
          break;
        case 2:
          wire.erase(at, 1 + rng() % 3);
          break;
        default:
          wire.insert(at, 1, static_cast<char>(rng()));
          break;
      }
      if (wire.empty()) wire = good;
    }
    ExpectSameAsProtobuf(wire);
    if (HasFatalFailure() || HasNonfatalFailure()) return;
  }
}

}  // namespace
}  // namespace kvindex::server
