#pragma once

// TruthWriter: snapshots every engine and writes --truth_file (ground_truth.h)
// and --prompts_file, each atomically.
//
// --prompts_file: {"time", "model", "prompts": [{"label", "tokens": [...],
// "cache_salt" (when salted), "mm_inputs": [{"identifier", "offset",
// "length"}] (when it has images: send both in MatchRequest), "expected": [{"pod", "dp_rank", "matched_blocks", "matched_tokens",
// "blocks_by_medium", "block_size", "last_seq"}]}]}: prompts sharing prefixes
// with what the engines serve (every system prompt plus a question, recent
// conversations plus a turn, one novel prompt) and, per engine holding at least
// block 0, the leading blocks it held after batch last_seq, best first, and how
// many of them are on each medium ({"GPU": n, "CPU": m}, media without any
// omitted; a block on both counts in both, as Match's blocks_by_medium). A
// hybrid engine's are vLLM's hit (EngineCache::CachedPrefixMedia), counted in
// group 0's blocks. An engine's truth
// and its expectations are taken at the same instant. The sample depends on
// the seed and the engines' counters only: engines at rest give the same
// prompts at every write.
//
// Thread safety: Write() may run while the engines run (it uses only their
// thread-safe calls); one Write() at a time.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "tools/sim/sim_engine.h"

namespace kvindex::sim {

struct TruthWriterOptions {
  std::string truth_file;    // empty: not written
  std::string prompts_file;  // empty: not written
  uint64_t seed = 1;
  size_t conversations_per_engine = 2;  // conversation prompts sampled from each engine
};

class TruthWriter {
 public:
  explicit TruthWriter(TruthWriterOptions options) : options_(std::move(options)) {}

  // Snapshots `engines` (pods' ranks adjacent, in rank order) and writes the
  // files. The first error is returned after trying both files.
  [[nodiscard]] absl::Status Write(absl::Span<SimEngine* const> engines);

  // The two documents, without writing them.
  struct Documents {
    nlohmann::json truth;
    nlohmann::json prompts;
  };
  Documents Snapshot(absl::Span<SimEngine* const> engines);

 private:
  const TruthWriterOptions options_;
};

}  // namespace kvindex::sim
