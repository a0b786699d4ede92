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
#include "tools/sim/prompt_keys.h"
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
  // Multimodal prompts: this fraction of new conversations open their first
  // turn with an image, a run of image_tokens copies of placeholder_token
  // whatever the image, told apart by an identifier drawn from images of a
  // small pool (so images recur across conversations and pods).
  double mm_fraction = 0;
  uint32_t image_tokens = 40;
  uint32_t placeholder_token = 32000;
  uint32_t images = 4;
  // Salted tenants: a new conversation belongs to one of salted_tenants + 1
  // tenants; all but the last carry cache_salt "tenant-<t>" (same salts on
  // every engine of a run).
  uint32_t salted_tenants = 0;
};

// A prompt for Match demos and tests, with a label saying where it comes from
// ("system-2", "conversation-0-5", "novel").
struct SamplePrompt {
  std::string label;
  std::vector<uint32_t> tokens;
  PromptKeys keys;  // its multimodal inputs and salt (empty for shared prompts)
};

// Appends `n` tokens drawn uniformly from [0, vocab_size) (at least 2 ids).
void AppendRandom(Rng& rng, uint32_t vocab_size, size_t n, std::vector<uint32_t>& out);

// The system prompts every engine of a run shares.
std::vector<std::vector<uint32_t>> MakeSystemPrompts(const WorkloadOptions& options);

class Workload {
 public:
  explicit Workload(const WorkloadOptions& options);

  // The next prompt: a random live conversation extended by one turn (a new
  // conversation starts from a random system prompt). The span is valid until
  // the next call.
  absl::Span<const uint32_t> Next();
  // The keys of the prompt the last Next() returned.
  const PromptKeys& LastKeys() const { return *last_keys_; }

  // Up to `conversations` of the live conversations, each followed by a fresh
  // turn: prompts whose prefix this engine probably still caches; among them a
  // multimodal and a salted one when any is live. Uses `rng`,
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
    PromptKeys keys;
  };

  void AppendTurn(Rng& rng, std::vector<uint32_t>& tokens) const;

  const WorkloadOptions options_;
  const std::vector<std::vector<uint32_t>> system_prompts_;
  Rng rng_;
  uint64_t next_id_ = 0;
  std::vector<Conversation> conversations_;
  const PromptKeys* last_keys_ = &kNoKeys;
  static inline const PromptKeys kNoKeys{};
};

}  // namespace kvindex::sim
