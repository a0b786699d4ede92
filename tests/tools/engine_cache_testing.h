#pragma once

// What the EngineCache tests (engine_cache_test, engine_variants_test) build
// their caches and prompts from.

#include <cstdint>
#include <numeric>
#include <vector>

#include "tools/sim/engine_cache.h"

namespace kvindex::sim {

// Tokens first, first + 1, ..., n of them.
inline std::vector<uint32_t> Seq(uint32_t n, uint32_t first) {
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// A cache of `gpu` GPU blocks (and `cpu` CPU blocks) of `block_size` tokens, model "m", salt 42.
inline EngineCacheOptions Options(uint32_t block_size, size_t gpu, size_t cpu = 0) {
  EngineCacheOptions o;
  o.block_size = block_size;
  o.gpu_capacity_blocks = gpu;
  o.cpu_capacity_blocks = cpu;
  o.salt = 42;
  o.model = "m";
  return o;
}

}  // namespace kvindex::sim
