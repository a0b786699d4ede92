#include "core/index/block_hash.h"

#include <xxhash.h>

#include <bit>
#include <cstring>
#include <memory>
#include <string>

namespace kvindex {
namespace {

// Blocks are hashed from a stack buffer when they fit (block sizes are usually 16-256 tokens).
constexpr size_t kStackTokens = 512;

void PutLE32(uint32_t v, char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(v >> (8 * i));
}
void PutLE64(uint64_t v, char* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
}

}  // namespace

uint64_t ContextSeed(std::string_view model, std::string_view lora_name, uint32_t block_size) {
  std::string buf;
  buf.reserve(model.size() + lora_name.size() + 6);
  buf.append(model);
  buf.push_back('\0');
  buf.append(lora_name);
  buf.push_back('\0');
  char le[4];
  PutLE32(block_size, le);
  buf.append(le, sizeof(le));
  return XXH3_64bits(buf.data(), buf.size());
}

uint64_t HashBlock(uint64_t parent, absl::Span<const uint32_t> tokens) {
  const size_t bytes = 8 + 4 * tokens.size();
  char stack[8 + 4 * kStackTokens];
  std::unique_ptr<char[]> heap;
  char* buf = stack;
  if (bytes > sizeof(stack)) {
    heap = std::make_unique_for_overwrite<char[]>(bytes);
    buf = heap.get();
  }
  PutLE64(parent, buf);
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(buf + 8, tokens.data(), tokens.size() * 4);  // already the wire layout
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) PutLE32(tokens[i], buf + 8 + 4 * i);
  }
  return XXH3_64bits(buf, bytes);
}

std::vector<uint64_t> HashPrefix(uint64_t seed, absl::Span<const uint32_t> tokens, uint32_t block_size) {
  std::vector<uint64_t> out;
  if (block_size == 0) return out;
  const size_t blocks = tokens.size() / block_size;
  out.reserve(blocks);
  uint64_t parent = seed;
  for (size_t i = 0; i < blocks; ++i) {
    parent = HashBlock(parent, tokens.subspan(i * block_size, block_size));
    out.push_back(parent);
  }
  return out;
}

}  // namespace kvindex
