#pragma once

// The index hash: kvindex's own chained block hash, deterministic across
// processes and machines so that replicas agree and gateways may send hashes.
//
//   seed(model, lora, block_size) = XXH3_64bits(model || 0x00 || lora || 0x00 || LE32(block_size))
//   hash(block i)                 = XXH3_64bits(LE64(parent) || LE32(token_0) || ... || LE32(token_{n-1}))
//
// where parent is seed(...) for block 0 of a prompt and hash(block i-1) after
// that, n = block_size, and XXH3_64bits is xxHash's XXH3 64-bit variant with
// its default secret and seed 0. Only full blocks are hashed.

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/types/span.h"

namespace kvindex {

// The chain seed of a context. Contexts with any field different never share hashes.
uint64_t ContextSeed(std::string_view model, std::string_view lora_name, uint32_t block_size);

// Hash of one block given its parent's hash (or the context seed) and its tokens.
uint64_t HashBlock(uint64_t parent, absl::Span<const uint32_t> tokens);

// Hashes of every full block of `tokens`, chained from `seed`.
std::vector<uint64_t> HashPrefix(uint64_t seed, absl::Span<const uint32_t> tokens, uint32_t block_size);

}  // namespace kvindex
