#include "core/block_hash.h"

#include <xxhash.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvindex {
namespace {

void AppendLE(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
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
