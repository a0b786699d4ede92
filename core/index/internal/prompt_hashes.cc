#include "core/index/internal/prompt_hashes.h"

#include "core/index/block_hash.h"

namespace kvindex {

std::vector<uint64_t> PromptHashes(std::string_view model, std::string_view lora, uint32_t block_size,
                                   absl::Span<const uint32_t> token_ids, std::string_view cache_salt,
                                   absl::Span<const MultimodalInput> mm_inputs) {
  std::vector<uint64_t> xs;
  if (block_size == 0) return xs;
  const size_t blocks = token_ids.size() / block_size;
  xs.reserve(blocks);
  const bool keyed = !cache_salt.empty() || !mm_inputs.empty();
  ExtraKeysHasher keys;
  uint64_t parent = ContextSeed(model, lora, block_size);
  for (size_t i = 0; i < blocks; ++i) {
    parent = HashBlock(parent, token_ids.subspan(i * block_size, block_size));
    if (keyed) {
      keys.Clear();
      AddQueryExtraKeys(mm_inputs, cache_salt, uint64_t{i} * block_size, block_size, keys);
      parent = keys.Hash(parent);
    }
    xs.push_back(parent);
  }
  return xs;
}

}  // namespace kvindex
