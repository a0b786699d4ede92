#pragma once

// PromptHashes: the index hashes of a prompt's full blocks at one block size,
// with the extra keys a query derives from its cache salt and multimodal
// inputs (README "Index hash") — the chain Match walks, all of it at once.
// RecordRouting hashes a hint with it. Thread-safe (no state).

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "core/index/extra_keys_hash.h"

namespace kvindex {

std::vector<uint64_t> PromptHashes(std::string_view model, std::string_view lora, uint32_t block_size,
                                   absl::Span<const uint32_t> token_ids, std::string_view cache_salt,
                                   absl::Span<const MultimodalInput> mm_inputs);

}  // namespace kvindex
