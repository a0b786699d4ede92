#include "tools/sim/workload.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kvindex::sim {
void AppendRandom(Rng& rng, uint32_t vocab_size, size_t n, std::vector<uint32_t>& out) {
  const uint32_t vocab = std::max<uint32_t>(vocab_size, 2);
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<uint32_t>(rng.Below(vocab)));
}

std::vector<std::vector<uint32_t>> MakeSystemPrompts(const WorkloadOptions& options) {
  Rng rng(Mix64(options.seed ^ 0x5157E9A0ULL));
  std::vector<std::vector<uint32_t>> prompts(options.system_prompts);
  for (auto& prompt : prompts) AppendRandom(rng, options.vocab_size, options.system_prompt_tokens, prompt);
  return prompts;
}

Workload::Workload(const WorkloadOptions& options)
    : options_(options),
      system_prompts_(MakeSystemPrompts(options)),
      rng_(Mix64(options.seed) ^ Mix64(options.stream + 0xC0FFEEULL)),
      conversations_(std::max<uint32_t>(options.conversations, 1)) {}

void Workload::AppendTurn(Rng& rng, std::vector<uint32_t>& tokens) const {
  const uint64_t mean = std::max<uint32_t>(options_.turn_tokens, 1);
  AppendRandom(rng, options_.vocab_size, rng.Between((mean + 1) / 2, mean + mean / 2), tokens);
}

absl::Span<const uint32_t> Workload::Next() {
  Conversation& c = conversations_[rng_.Below(conversations_.size())];
  if (c.turns == 0 || c.turns >= std::max<uint32_t>(options_.max_turns, 1)) {
    c.id = next_id_++;
    c.turns = 0;
    c.tokens.clear();
    c.keys = PromptKeys{};
    if (!system_prompts_.empty()) {
      const auto& system = system_prompts_[rng_.Below(system_prompts_.size())];
      c.tokens.assign(system.begin(), system.end());
    }
    // Drawn only when the features are on, so that a run without them keeps
    // the prompts it always had.
    if (options_.salted_tenants > 0) {
      const uint64_t tenant = rng_.Below(uint64_t{options_.salted_tenants} + 1);
      if (tenant < options_.salted_tenants) c.keys.cache_salt = absl::StrCat("tenant-", tenant);
    }
    if (options_.mm_fraction > 0 && options_.image_tokens > 0 &&
        static_cast<double>(rng_.Below(1u << 20)) < options_.mm_fraction * (1u << 20)) {
      const uint64_t image = rng_.Below(std::max<uint32_t>(options_.images, 1));
      c.keys.mm_inputs.push_back(MultimodalInput{absl::StrCat("image-", image),
                                                 static_cast<uint32_t>(c.tokens.size()), options_.image_tokens});
      c.tokens.insert(c.tokens.end(), options_.image_tokens, options_.placeholder_token);
    }
  }
  AppendTurn(rng_, c.tokens);
  ++c.turns;
  last_keys_ = &c.keys;
  return c.tokens;
}

std::vector<SamplePrompt> Workload::SampleConversations(size_t conversations, Rng& rng) const {
  std::vector<const Conversation*> live;
  for (const Conversation& c : conversations_) {
    if (c.turns > 0) live.push_back(&c);
  }
  std::vector<SamplePrompt> out;
  auto take = [&](size_t pick) {
    const Conversation& c = *live[pick];
    live.erase(live.begin() + static_cast<std::ptrdiff_t>(pick));
    SamplePrompt p{absl::StrCat("conversation-", options_.stream, "-", c.id), c.tokens, c.keys};
    AppendTurn(rng, p.tokens);
    out.push_back(std::move(p));
  };
  // A multimodal and a salted conversation first, when any is live, so that
  // the sample covers every kind of prompt the workload makes; then at random.
  bool (*const kinds[])(const Conversation&) = {
      [](const Conversation& c) { return !c.keys.mm_inputs.empty(); },
      [](const Conversation& c) { return !c.keys.cache_salt.empty(); }};
  for (auto* kind : kinds) {
    if (out.size() >= conversations) break;
    std::vector<size_t> of_kind;
    for (size_t i = 0; i < live.size(); ++i) {
      if (kind(*live[i])) of_kind.push_back(i);
    }
    if (!of_kind.empty()) take(of_kind[rng.Below(of_kind.size())]);
  }
  while (out.size() < conversations && !live.empty()) take(rng.Below(live.size()));
  return out;
}

std::vector<SamplePrompt> Workload::SampleShared(Rng& rng) const {
  std::vector<SamplePrompt> out;
  for (size_t i = 0; i < system_prompts_.size(); ++i) {
    SamplePrompt p{absl::StrCat("system-", i), system_prompts_[i]};
    AppendTurn(rng, p.tokens);
    out.push_back(std::move(p));
  }
  SamplePrompt novel{"novel", {}};
  AppendRandom(rng, options_.vocab_size, std::max<uint32_t>(options_.system_prompt_tokens, options_.turn_tokens),
               novel.tokens);
  out.push_back(std::move(novel));
  return out;
}

}  // namespace kvindex::sim
