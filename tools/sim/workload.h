#pragma once

// Workload: the prompts one simulated engine serves. Prompts share prefixes the
// way chat traffic does: a few system prompts common to every engine, and
// multi-turn conversations whose every prompt extends the previous one.
//
// Deterministic: the system prompts depend only on `seed`; the conversations on
// (`seed`, `stream`). Not thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "tools/sim/rng.h"

namespace kvindex::sim {

struct WorkloadOptions {
  uint64_t seed = 1;     // shared by all engines: the system prompts derive from it alone
  uint64_t stream = 0;   // per engine: its conversations derive from (seed, stream)
  uint32_t vocab_size = 32000;
  uint32_t system_prompts = 4;         // 0: conversations start from nothing
  uint32_t system_prompt_tokens = 512;
  uint32_t conversations = 16;         // live conversations; >= 1
  uint32_t turn_tokens = 128;          // mean tokens one turn adds, drawn from [t/2, 3t/2]; >= 1
  uint32_t max_turns = 6;              // a conversation is replaced after this many turns; >= 1
};

// A prompt for Match demos and tests, with a label saying where it comes from
// ("system-2", "conversation-0-5", "novel").
struct SamplePrompt {
  std::string label;
  std::vector<uint32_t> tokens;
};

// The system prompts every engine of a run shares.
std::vector<std::vector<uint32_t>> MakeSystemPrompts(const WorkloadOptions& options);

class Workload {
 public:
  explicit Workload(const WorkloadOptions& options);

  // The next prompt: a random live conversation extended by one turn (a new
  // conversation starts from a random system prompt). The span is valid until
  // the next call.
  absl::Span<const uint32_t> Next();

  // Up to `conversations` of the live conversations, each followed by a fresh
  // turn: prompts whose prefix this engine probably still caches. Uses `rng`,
  // not the workload's generator, so sampling does not change Next().
  std::vector<SamplePrompt> SampleConversations(size_t conversations, Rng& rng) const;

  // Every system prompt followed by a fresh question, and one prompt sharing
  // nothing with any other.
  std::vector<SamplePrompt> SampleShared(Rng& rng) const;

  const WorkloadOptions& options() const { return options_; }

 private:
  struct Conversation {
    uint64_t id = 0;
    uint32_t turns = 0;
    std::vector<uint32_t> tokens;
  };

  void AppendTurn(Rng& rng, std::vector<uint32_t>& tokens) const;

  const WorkloadOptions options_;
  const std::vector<std::vector<uint32_t>> system_prompts_;
  Rng rng_;
  uint64_t next_id_ = 0;
  std::vector<Conversation> conversations_;
};

}  // namespace kvindex::sim
