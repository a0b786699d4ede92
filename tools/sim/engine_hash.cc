#include "tools/sim/engine_hash.h"

#include "tools/sim/rng.h"

namespace kvindex::sim {

uint64_t EngineBlockHash(uint64_t parent, absl::Span<const uint32_t> tokens) {
  uint64_t h = Mix64(parent ^ 0x243F6A8885A308D3ULL);
  size_t i = 0;
  for (; i + 1 < tokens.size(); i += 2) {
    h = (h ^ (tokens[i] | uint64_t{tokens[i + 1]} << 32)) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
  }
  if (i < tokens.size()) {
    h = (h ^ tokens[i]) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
  }
  return Mix64(h ^ tokens.size());
}

std::array<uint8_t, 32> EngineHashDigest(uint64_t hash) {
  std::array<uint8_t, 32> digest;
  uint64_t word = hash;
  for (int w = 0; w < 3; ++w) {
    word = Mix64(word + 0x9E3779B97F4A7C15ULL);
    for (int b = 0; b < 8; ++b) digest[w * 8 + b] = static_cast<uint8_t>(word >> (56 - 8 * b));
  }
  for (int b = 0; b < 8; ++b) digest[24 + b] = static_cast<uint8_t>(hash >> (56 - 8 * b));
  return digest;
}

}  // namespace kvindex::sim
