#pragma once

// Engine block hashes: what a simulated engine puts in block_hashes and
// parent_block_hash. Deliberately unrelated to kvindex's index hash (see
// README "Index hash"): like vLLM's seeded SHA-256, they chain from a per-process
// salt (vLLM's NONE_HASH, random unless PYTHONHASHSEED is set), so two pods
// holding the same tokens report different hashes, and a restarted engine
// reports new ones.

#include <array>
#include <cstdint>

#include "absl/types/span.h"

namespace kvindex::sim {

// Hash of one block from its parent's hash (the salt for block 0) and its tokens.
uint64_t EngineBlockHash(uint64_t parent, absl::Span<const uint32_t> tokens);

// The 32-byte digest sent when hashes travel as msgpack bin (vLLM with
// VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0): 24 bytes derived from `hash`, then
// `hash` big-endian, so that a decoder taking the last 8 bytes gets `hash`.
std::array<uint8_t, 32> EngineHashDigest(uint64_t hash);

}  // namespace kvindex::sim
