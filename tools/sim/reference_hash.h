#pragma once

// The simulator's own index hash (README "Index hash"), written from the
// README's formula alone: the bytes laid out as it says, hashed with XXH3.
// The ground truth must not share the code it checks, so nothing here comes
// from core/index; tests/tools/reference_hash_test.cc reproduces the golden
// vectors (../shared/wire/index_hash_vectors.json, computed outside the
// project, and tests/testdata/extra_keys_hash_vectors.json, computed with
// python3-xxhash) with it.
//
// Pure functions; any thread.

#include <cstdint>
#include <string_view>

#include "absl/types/span.h"
#include "core/events/event_batch.h"

namespace kvindex::sim {

// seed = XXH3_64bits(model || 0x00 || lora_name || 0x00 || LE32(block_size))
uint64_t ReferenceSeed(std::string_view model, std::string_view lora_name, uint32_t block_size);

// h[i] = XXH3_64bits(LE64(parent) || LE32(t) for each token of the block)
uint64_t ReferenceBlockHash(uint64_t parent, absl::Span<const uint32_t> tokens);

// h'[i] = XXH3_64bits(LE64(h) || enc(keys)) for a non-empty list of keys; `h`
// itself for kNil or an empty list.
uint64_t ReferenceWithExtraKeys(uint64_t h, const ExtraKey& keys);

}  // namespace kvindex::sim
