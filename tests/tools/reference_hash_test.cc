// The simulator's ground truth hashes with its own implementation of README
// "Index hash" (tools/sim/reference_hash.h), not kvindex's: it must reproduce
// the vectors computed outside the project, through the same path the truth
// takes (a prompt's keys -> BlockExtraKeys -> WithExtraKeys).

#include "tools/sim/reference_hash.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/sim/prompt_keys.h"

namespace kvindex::sim {
namespace {

using Json = nlohmann::json;

Json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  return Json::parse(std::string(std::istreambuf_iterator<char>(in), {}), nullptr, /*allow_exceptions=*/false);
}

std::string Hex(uint64_t h) {
  char buf[19];
  std::snprintf(buf, sizeof(buf), "0x%016llx", static_cast<unsigned long long>(h));
  return buf;
}

TEST(ReferenceHashTest, ReproducesTheGoldenIndexHashes) {
  const Json doc = ReadJson(std::filesystem::path(KVINDEX_WIRE_DIR) / "index_hash_vectors.json");
  ASSERT_FALSE(doc.is_discarded());
  ASSERT_GE(doc.at("cases").size(), 3u);
  for (const Json& c : doc.at("cases")) {
    const uint32_t bs = c.at("block_size");
    const std::vector<uint32_t> tokens = c.at("token_ids");
    uint64_t h = ReferenceSeed(c.at("model").get<std::string>(), c.at("lora_name").get<std::string>(), bs);
    std::vector<std::string> got;
    for (size_t i = 0; i + bs <= tokens.size(); i += bs) {
      h = ReferenceBlockHash(h, absl::MakeConstSpan(tokens).subspan(i, bs));
      got.push_back(Hex(h));
    }
    EXPECT_EQ(got, c.at("hashes").get<std::vector<std::string>>()) << c.dump();
  }
}

// The query form (a prompt's cache_salt and mm_inputs) is what the simulator's prompts carry.
TEST(ReferenceHashTest, ReproducesTheExtraKeysVectorsOfPrompts) {
  const Json doc = ReadJson(std::filesystem::path(KVINDEX_SOURCE_DIR) / "tests/testdata/extra_keys_hash_vectors.json");
  ASSERT_FALSE(doc.is_discarded());
  size_t prompts = 0;
  for (const Json& c : doc.at("cases")) {
    if (c.contains("extra_keys")) continue;  // an engine's keys: kvindex's decoder path, not the simulator's
    SCOPED_TRACE(c.at("name").get<std::string>());
    ++prompts;
    PromptKeys keys;
    keys.cache_salt = c.value("cache_salt", "");
    for (const Json& mm : c.value("mm_inputs", Json::array())) {
      keys.mm_inputs.push_back({mm.at("identifier"), mm.at("offset"), mm.at("length")});
    }
    const uint32_t bs = c.at("block_size");
    const std::vector<uint32_t> tokens = c.at("token_ids");
    uint64_t h = ReferenceSeed(c.at("model").get<std::string>(), c.at("lora_name").get<std::string>(), bs);
    std::vector<std::string> got;
    for (size_t b = 0; (b + 1) * bs <= tokens.size(); ++b) {
      h = WithExtraKeys(ReferenceBlockHash(h, absl::MakeConstSpan(tokens).subspan(b * bs, bs)),
                        BlockExtraKeys(keys, b, bs));
      got.push_back(Hex(h));
    }
    EXPECT_EQ(got, c.at("hashes").get<std::vector<std::string>>());
  }
  EXPECT_GE(prompts, 2u);
}

}  // namespace
}  // namespace kvindex::sim
