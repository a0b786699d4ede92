#include "tools/sim/prompt_keys.h"

#include "tools/sim/reference_hash.h"
#include "tools/sim/rng.h"

namespace kvindex::sim {

ExtraKey BlockExtraKeys(const PromptKeys& keys, size_t block, uint32_t block_size) {
  ExtraKey out;
  const uint64_t start = uint64_t{block} * block_size, end = start + block_size;
  for (const MultimodalInput& in : keys.mm_inputs) {
    if (in.length == 0 || uint64_t{in.offset} >= end || uint64_t{in.offset} + in.length <= start) continue;
    ExtraKey pair;
    pair.kind = ExtraKey::Kind::kList;
    pair.items.push_back(ExtraKey{.kind = ExtraKey::Kind::kStr, .bytes = in.identifier});
    pair.items.push_back(ExtraKey{.kind = ExtraKey::Kind::kInt,
                                  .number = static_cast<int64_t>(in.offset) - static_cast<int64_t>(start)});
    out.items.push_back(std::move(pair));
  }
  if (block == 0 && !keys.cache_salt.empty()) {
    out.items.push_back(ExtraKey{.kind = ExtraKey::Kind::kStr, .bytes = keys.cache_salt});
  }
  if (!out.items.empty()) out.kind = ExtraKey::Kind::kList;
  return out;
}

uint64_t ExtraKeysDigest(const ExtraKey& keys) {
  if (keys.kind == ExtraKey::Kind::kNil) return 0;
  // Any digest will do (engine hashes are the engine's own); a Mix64 of the
  // index's keeps the sim from growing a second encoder.
  return Mix64(WithExtraKeys(0x6A09E667F3BCC908ULL, keys) ^ 0x510E527FADE682D1ULL);
}

uint64_t WithExtraKeys(uint64_t token_hash, const ExtraKey& keys) { return ReferenceWithExtraKeys(token_hash, keys); }

void AddKeysJson(const PromptKeys& keys, nlohmann::json& prompt) {
  if (!keys.cache_salt.empty()) prompt["cache_salt"] = keys.cache_salt;
  if (keys.mm_inputs.empty()) return;
  nlohmann::json inputs = nlohmann::json::array();
  for (const MultimodalInput& in : keys.mm_inputs) {
    inputs.push_back({{"identifier", in.identifier}, {"offset", in.offset}, {"length", in.length}});
  }
  prompt["mm_inputs"] = std::move(inputs);
}

}  // namespace kvindex::sim
