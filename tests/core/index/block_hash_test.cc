#include "core/index/block_hash.h"

#include <xxhash.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvindex {
namespace {

void AppendLE(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

std::string Hex(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof(buf), "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// One case of ../shared/wire/index_hash_vectors.json: golden index hashes
// computed outside the project (Debian's libxxhash), per README "Index hash".
struct GoldenCase {
  std::string model;
  std::string lora_name;
  uint32_t block_size = 0;
  std::vector<uint32_t> tokens;
  std::vector<std::string> hashes;  // as written: "0x" and 16 lower-case hex digits

  std::string Name() const {
    return "model \"" + model + "\" lora \"" + lora_name + "\" block size " + std::to_string(block_size) + ", " +
           std::to_string(tokens.size()) + " tokens";
  }
};

std::vector<GoldenCase> GoldenCases() {
  const std::filesystem::path path = std::filesystem::path(KVINDEX_WIRE_DIR) / "index_hash_vectors.json";
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  const nlohmann::json doc =
      nlohmann::json::parse(std::string(std::istreambuf_iterator<char>(in), {}), nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(doc.is_discarded()) << path << " is not JSON";
  std::vector<GoldenCase> out;
  if (doc.is_discarded() || !doc.contains("cases")) return out;
  for (const nlohmann::json& c : doc["cases"]) {
    GoldenCase g;
    g.model = c.at("model").get<std::string>();
    g.lora_name = c.at("lora_name").get<std::string>();
    g.block_size = c.at("block_size").get<uint32_t>();
    g.tokens = c.at("token_ids").get<std::vector<uint32_t>>();
    g.hashes = c.at("hashes").get<std::vector<std::string>>();
    out.push_back(std::move(g));
  }
  return out;
}

// The golden file covers what it promises (wire/README.md), so that a
// truncated or regenerated file cannot make the tests below pass vacuously.
TEST(BlockHashGoldenTest, VectorsCoverTheDocumentedCases) {
  const std::vector<GoldenCase> cases = GoldenCases();
  ASSERT_GE(cases.size(), 8u);
  bool lora = false, non_ascii = false, uint32_max = false, zero_token = false, partial = false, no_block = false;
  std::set<uint32_t> block_sizes;
  size_t hashes = 0;
  for (const GoldenCase& c : cases) {
    ASSERT_GT(c.block_size, 0u) << c.Name();
    ASSERT_EQ(c.hashes.size(), c.tokens.size() / c.block_size) << c.Name() << ": one hash per full block";
    hashes += c.hashes.size();
    block_sizes.insert(c.block_size);
    lora |= !c.lora_name.empty();
    for (unsigned char ch : c.model) non_ascii |= ch >= 0x80;
    for (uint32_t t : c.tokens) {
      uint32_max |= t == 0xffffffffu;
      zero_token |= t == 0;
    }
    partial |= c.tokens.size() % c.block_size != 0;
    no_block |= c.hashes.empty();
  }
  EXPECT_TRUE(lora && non_ascii && uint32_max && zero_token && partial && no_block);
  EXPECT_EQ(block_sizes, (std::set<uint32_t>{1, 4, 16, 32}));
  EXPECT_GE(hashes, 20u);
}

// Every golden hash, byte for byte, through the public API: ContextSeed then
// HashBlock block by block, and HashPrefix in one call.
TEST(BlockHashGoldenTest, ReproducesEveryGoldenHash) {
  const std::vector<GoldenCase> cases = GoldenCases();
  ASSERT_FALSE(cases.empty());
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.Name());
    const uint64_t seed = ContextSeed(c.model, c.lora_name, c.block_size);
    std::vector<std::string> chained;
    uint64_t parent = seed;
    for (size_t i = 0; i + c.block_size <= c.tokens.size(); i += c.block_size) {
      parent = HashBlock(parent, absl::MakeConstSpan(c.tokens).subspan(i, c.block_size));
      chained.push_back(Hex(parent));
    }
    EXPECT_EQ(chained, c.hashes);
    std::vector<std::string> prefix;
    for (uint64_t h : HashPrefix(seed, c.tokens, c.block_size)) prefix.push_back(Hex(h));
    EXPECT_EQ(prefix, c.hashes);
  }
}

// This file's hand-built byte layout (the references of the tests below)
// agrees with the golden hashes too: the layout is README's, not the code's.
TEST(BlockHashGoldenTest, HandBuiltLayoutReproducesEveryGoldenHash) {
  const std::vector<GoldenCase> cases = GoldenCases();
  ASSERT_FALSE(cases.empty());
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.Name());
    std::string seed_bytes = c.model + '\0' + c.lora_name + '\0';
    AppendLE(seed_bytes, c.block_size, 4);
    uint64_t parent = XXH3_64bits(seed_bytes.data(), seed_bytes.size());
    std::vector<std::string> got;
    for (size_t i = 0; i + c.block_size <= c.tokens.size(); i += c.block_size) {
      std::string bytes;
      AppendLE(bytes, parent, 8);
      for (size_t j = i; j < i + c.block_size; ++j) AppendLE(bytes, c.tokens[j], 4);
      parent = XXH3_64bits(bytes.data(), bytes.size());
      got.push_back(Hex(parent));
    }
    EXPECT_EQ(got, c.hashes);
  }
}

// The layout documented in block_hash.h and the README, built byte by byte.
TEST(BlockHashTest, ContextSeedIsXxh3OfModelLoraAndLittleEndianBlockSize) {
  std::string bytes = std::string("llama") + '\0' + "sql" + '\0';
  AppendLE(bytes, 16, 4);
  EXPECT_EQ(ContextSeed("llama", "sql", 16), XXH3_64bits(bytes.data(), bytes.size()));
}

TEST(BlockHashTest, BlockHashIsXxh3OfLittleEndianParentAndTokens) {
  const std::vector<uint32_t> tokens = {1, 2, 300, 70000};
  std::string bytes;
  AppendLE(bytes, 0x0123456789abcdefULL, 8);
  for (uint32_t t : tokens) AppendLE(bytes, t, 4);
  EXPECT_EQ(HashBlock(0x0123456789abcdefULL, tokens), XXH3_64bits(bytes.data(), bytes.size()));
}

TEST(BlockHashTest, LargeBlocksHashLikeSmallOnes) {
  std::vector<uint32_t> tokens(5000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(i * 7919);
  std::string bytes;
  AppendLE(bytes, 42, 8);
  for (uint32_t t : tokens) AppendLE(bytes, t, 4);
  EXPECT_EQ(HashBlock(42, tokens), XXH3_64bits(bytes.data(), bytes.size()));
}

// 16 and 32 tokens take a fixed-size path: the same hash as every other size.
TEST(BlockHashTest, EveryBlockSizeHashesItsLittleEndianLayout) {
  for (size_t n = 1; n <= 66; ++n) {
    std::vector<uint32_t> tokens(n);
    for (size_t i = 0; i < n; ++i) tokens[i] = static_cast<uint32_t>(i * 2654435761u + n);
    std::string bytes;
    AppendLE(bytes, 0xfedcba9876543210ULL + n, 8);
    for (uint32_t t : tokens) AppendLE(bytes, t, 4);
    EXPECT_EQ(HashBlock(0xfedcba9876543210ULL + n, tokens), XXH3_64bits(bytes.data(), bytes.size())) << n;
  }
}

TEST(BlockHashTest, ContextsAreKeptApart) {
  const uint64_t base = ContextSeed("m", "", 16);
  EXPECT_NE(base, ContextSeed("m", "", 32));
  EXPECT_NE(base, ContextSeed("m", "lora", 16));
  EXPECT_NE(base, ContextSeed("m2", "", 16));
  // The separator keeps ("ab", "c") and ("a", "bc") apart.
  EXPECT_NE(ContextSeed("ab", "c", 16), ContextSeed("a", "bc", 16));
}

TEST(BlockHashTest, PrefixChainsEveryFullBlockFromTheSeed) {
  const std::vector<uint32_t> tokens = {1, 2, 3, 4, 5, 6, 7};
  const uint64_t seed = ContextSeed("m", "", 2);
  const std::vector<uint64_t> hashes = HashPrefix(seed, tokens, 2);
  ASSERT_EQ(hashes.size(), 3u);  // the partial last block is not hashed
  EXPECT_EQ(hashes[0], HashBlock(seed, {1, 2}));
  EXPECT_EQ(hashes[1], HashBlock(hashes[0], {3, 4}));
  EXPECT_EQ(hashes[2], HashBlock(hashes[1], {5, 6}));
}

TEST(BlockHashTest, SameTokensUnderDifferentParentsDiffer) {
  EXPECT_NE(HashBlock(1, {5, 6}), HashBlock(2, {5, 6}));
}

TEST(BlockHashTest, ZeroBlockSizeHashesNothing) {
  EXPECT_TRUE(HashPrefix(7, std::vector<uint32_t>{1, 2}, 0).empty());
}

}  // namespace
}  // namespace kvindex
