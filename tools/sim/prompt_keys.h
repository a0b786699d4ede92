#pragma once

// PromptKeys: what a prompt carries besides its tokens that vLLM folds into
// its block hashes (../shared/wire/README.md "Hybrid models, extra keys and
// tiers"): multimodal inputs (an image is a run of identical placeholder
// tokens; its identifier tells images apart) and a tenant's cache_salt.
// Each full block's extra keys are derived as vLLM derives them: one
// [identifier, offset of the input's first token - the block's first token]
// per input overlapping the block, in order, then the salt on block 0 — the
// same rule kvindex applies to a Match's mm_inputs and cache_salt.
//
// Pure functions; thread-compatible.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/events/event_batch.h"
#include "core/index/extra_keys_hash.h"
#include "nlohmann/json.hpp"

namespace kvindex::sim {

struct PromptKeys {
  std::string cache_salt;                 // empty: none
  std::vector<MultimodalInput> mm_inputs; // in prompt order

  bool empty() const { return cache_salt.empty() && mm_inputs.empty(); }
  bool operator==(const PromptKeys&) const = default;
};

// The extra keys of block `block` (tokens [block*bs, block*bs+bs)): kNil when
// it has none, else a kList of its items (the salt, a str, last on block 0).
ExtraKey BlockExtraKeys(const PromptKeys& keys, size_t block, uint32_t block_size);

// A 64-bit digest of a block's keys (for the engine's own hash chain); 0 for kNil.
uint64_t ExtraKeysDigest(const ExtraKey& keys);

// kvindex's index hash of a block from its token hash and its keys
// (reference_hash.h, not kvindex's own code); `token_hash` itself when kNil.
uint64_t WithExtraKeys(uint64_t token_hash, const ExtraKey& keys);

// The prompts-file fields: "cache_salt" (when set) and "mm_inputs"
// [{"identifier", "offset", "length"}] (when any), added to `prompt`.
void AddKeysJson(const PromptKeys& keys, nlohmann::json& prompt);

}  // namespace kvindex::sim
