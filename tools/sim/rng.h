#pragma once

// Rng: a small deterministic generator (SplitMix64), so that one --seed gives
// the same workload with every compiler and standard library (the <random>
// distributions do not promise that).
//
// Not thread-safe; each owner keeps its own.

#include <cstdint>

namespace kvindex::sim {

// SplitMix64's finalizer: a bijective 64-bit mix.
inline uint64_t Mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t Next() { return Mix64(state_ += 0x9E3779B97F4A7C15ULL); }

  // Uniform in [0, n); n must be > 0. Ranges up to 2^32 use a multiply
  // (bias below 2^-32 * n), larger ones a modulo.
  uint64_t Below(uint64_t n) {
    return n <= (uint64_t{1} << 32) ? ((Next() >> 32) * n) >> 32 : Next() % n;
  }

  // Uniform in [lo, hi]; lo <= hi.
  uint64_t Between(uint64_t lo, uint64_t hi) { return lo + Below(hi - lo + 1); }

 private:
  uint64_t state_;
};

}  // namespace kvindex::sim
