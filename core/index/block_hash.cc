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
  if constexpr (std::endian::native == std::endian::little) {
    // One 8-byte store: XXH3 reads these bytes back at once, and eight byte
    // stores would stall that read (no store forwarding): +4 ns a block.
    std::memcpy(out, &v, sizeof(v));
  } else {
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
  }
}

// HashBlock of exactly `kTokens` tokens: with the size known to the compiler
// the copy is a few vector moves instead of a call to memcpy, which at 16
// tokens costs about as much as the hash (BENCHMARKS.md, "Where a Match
// spends its time").
template <size_t kTokens>
uint64_t HashFixedBlock(uint64_t parent, const uint32_t* tokens) {
  char buf[8 + 4 * kTokens];
  PutLE64(parent, buf);
  std::memcpy(buf + 8, tokens, sizeof(buf) - 8);
  return XXH3_64bits(buf, sizeof(buf));
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
  if constexpr (std::endian::native == std::endian::little) {  // tokens are already the wire layout
    switch (tokens.size()) {  // the common block sizes
      case 16: return HashFixedBlock<16>(parent, tokens.data());
      case 32: return HashFixedBlock<32>(parent, tokens.data());
      default: break;
    }
  }
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
