#pragma once

// The index hash of a block with extra keys (README "Index hash"): what vLLM
// folds into its block hash besides the tokens (multimodal inputs, the cache
// salt, a prompt-embeddings digest) is folded into kvindex's hash too, so
// that identical placeholder tokens of different images, or a salted and an
// unsalted prompt, never share a block:
//
//   h'[i] = XXH3_64bits( LE64(h[i]) || enc([K_0, ..., K_{n-1}]) )
//
// where h[i] is the block's token hash (block_hash.h), K its extra keys in the
// engine's order without a leading LoRA name (the seed covers the LoRA), and
//   enc(list of n) = 'l' LE32(n) enc(item)...    enc(str)   = 's' LE32(len) UTF-8
//   enc(bytes)     = 'b' LE32(len) bytes          enc(int)   = 'i' LE64(two's complement)
//   enc(int >= 2^63, unsigned) = 'u' LE64          enc(nil)   = 'n'
// A block with no keys (n = 0) keeps h[i]; its descendants chain from h'[i].
//
// A query derives a block's keys as vLLM does: one [identifier, offset of the
// input's first token - the block's first token] per multimodal input
// overlapping the block, in the order given, then the cache salt on block 0.
//
// Not thread-safe (a builder is per call); the functions are pure.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/types/span.h"
#include "core/events/event_batch.h"

namespace kvindex {

// A multimodal input of a prompt: its identifier (vLLM's multi_modal_uuids or
// mm hash) and the tokens it spans.
struct MultimodalInput {
  std::string identifier;
  uint32_t offset = 0;  // first token, in prompt tokens
  uint32_t length = 0;  // tokens
};

// Builds enc([K_0, ...]) item by item and hashes it onto a block hash.
class ExtraKeysHasher {
 public:
  void Clear() {
    items_.resize(kHeader);
    count_ = 0;
  }
  bool empty() const { return count_ == 0; }

  void AddStr(std::string_view s);
  // Any item as decoded from an engine event (lists recursively).
  void Add(const ExtraKey& key);
  // The [identifier, offset] pair of a multimodal input.
  void AddMultimodal(std::string_view identifier, int64_t relative_offset);

  // h' for block hash `h`; `h` itself when no item was added.
  uint64_t Hash(uint64_t h);

 private:
  void AppendItem(const ExtraKey& key);

  // LE64(h) 'l' LE32(n), filled in by Hash, then enc of every item added:
  // hashed in place, no copy per block.
  static constexpr size_t kHeader = 13;
  std::string items_ = std::string(kHeader, '\0');
  uint32_t count_ = 0;
};

// Adds the keys of block `entry` of an event (kNil or a kList), without a
// leading str equal to `lora_name` when that is not empty.
void AddEventExtraKeys(const ExtraKey& entry, std::string_view lora_name, ExtraKeysHasher& hasher);

// Adds the keys a query's block [start, start + block_size) has: every input
// of `inputs` overlapping it, then `cache_salt` when start is 0 and it is not empty.
void AddQueryExtraKeys(absl::Span<const MultimodalInput> inputs, std::string_view cache_salt, uint64_t start,
                       uint32_t block_size, ExtraKeysHasher& hasher);

}  // namespace kvindex
