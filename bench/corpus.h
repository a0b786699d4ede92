#pragma once

// What the in-process benchmarks index: random prompts stored as engine
// events, and the percentiles they report. Header-only; single-threaded use.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/index/prefix_index.h"

namespace kvindex::bench {

inline constexpr uint32_t kBlockSize = 16;
inline constexpr char kModel[] = "bench-model";

// `n` random token ids below 128,000 (a vocabulary's size).
inline std::vector<uint32_t> RandomTokens(std::mt19937_64& rng, size_t n) {
  std::vector<uint32_t> t(n);
  for (auto& x : t) x = static_cast<uint32_t>(rng() % 128000);
  return t;
}

// Stores `tokens` (whole blocks) as one chain on `worker`, in events of up to
// 64 blocks, each naming the previous one's last block as its parent; the
// engine's block hashes are random.
inline void StoreChain(PrefixIndex& index, const WorkerKey& worker, const std::vector<uint32_t>& tokens,
                       std::mt19937_64& rng) {
  const WorkerContext context{kModel, ""};
  const size_t blocks = tokens.size() / kBlockSize;
  std::optional<uint64_t> parent;
  for (size_t start = 0; start < blocks; start += 64) {
    BlockStored s;
    s.block_size = kBlockSize;
    s.parent_block_hash = parent;
    const size_t end = std::min(blocks, start + 64);
    for (size_t b = start; b < end; ++b) s.block_hashes.push_back(rng());
    s.token_ids.assign(tokens.begin() + start * kBlockSize, tokens.begin() + end * kBlockSize);
    parent = s.block_hashes.back();
    EventBatch batch;
    batch.events.push_back(std::move(s));
    (void)index.Apply(worker, context, batch);
  }
}

inline WorkerKey BenchWorker(int w) { return {"bench/pod-" + std::to_string(w), 0}; }

// The `q` quantile (0..1) of `samples`, which it sorts; 0 when empty.
inline double Quantile(std::vector<double>& samples, double q) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  return samples[std::min(samples.size() - 1, static_cast<size_t>(samples.size() * q))];
}

}  // namespace kvindex::bench
