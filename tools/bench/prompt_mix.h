#pragma once

// Prompt mix of kvindex-bench: "512:1,2048:2,8192:1" (prompt tokens : weight),
// and the prompts themselves, taken from kvindex-sim's --prompts_file so that
// they hit the index: each prompt of length L is a simulated prompt that some
// engine holds, cut to L tokens (or extended with fresh tokens when shorter).

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace kvindex::bench {

struct MixEntry {
  uint32_t tokens = 0;
  double weight = 1;
};

// "TOKENS[:WEIGHT],..." with TOKENS >= 1 and WEIGHT > 0 (default 1).
[[nodiscard]] absl::StatusOr<std::vector<MixEntry>> ParsePromptMix(absl::string_view text);

// One prompt of a kvindex-sim --prompts_file.
struct SimPrompt {
  std::string label;
  std::vector<uint32_t> tokens;
  uint32_t holders = 0;          // workers expected to hold at least block 0
  uint32_t best_cached_tokens = 0;  // matched_tokens of the best expected worker
};

struct SimPrompts {
  std::string model;
  std::vector<SimPrompt> prompts;
};

// Reads a kvindex-sim --prompts_file.
[[nodiscard]] absl::StatusOr<SimPrompts> ReadSimPrompts(const std::string& path);

// `count` prompts of exactly `tokens` tokens (sources repeat when fewer). Sources are the sim
// prompts held by some worker, longest cached prefix first (all of them when
// none is held; random tokens when there are none). A source longer than
// `tokens` is cut; a shorter one is extended with tokens drawn from `seed`.
std::vector<std::vector<uint32_t>> MakePrompts(const std::vector<SimPrompt>& sources, uint32_t tokens, size_t count,
                                               uint64_t seed);

}  // namespace kvindex::bench
