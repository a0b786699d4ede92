#include "tools/bench/prompt_mix.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/util/read_file.h"
#include "nlohmann/json.hpp"
#include "tools/sim/rng.h"

namespace kvindex::bench {

absl::StatusOr<std::vector<MixEntry>> ParsePromptMix(absl::string_view text) {
  std::vector<MixEntry> mix;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<absl::string_view> fields = absl::StrSplit(part, ':');
    MixEntry e;
    if (fields.size() > 2 || !absl::SimpleAtoi(fields[0], &e.tokens) || e.tokens == 0 ||
        (fields.size() == 2 && (!absl::SimpleAtod(fields[1], &e.weight) || !(e.weight > 0)))) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt mix entry \"", part, "\": want TOKENS[:WEIGHT], e.g. 512:1,2048:2"));
    }
    mix.push_back(e);
  }
  if (mix.empty()) return absl::InvalidArgumentError("empty prompt mix");
  return mix;
}

absl::StatusOr<SimPrompts> ReadSimPrompts(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  const nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("prompts") || !doc["prompts"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a kvindex-sim prompts file"));
  }
  SimPrompts out;
  if (doc.contains("model") && doc["model"].is_string()) out.model = doc["model"].get<std::string>();
  for (const nlohmann::json& p : doc["prompts"]) {
    if (!p.is_object() || !p.contains("tokens") || !p["tokens"].is_array()) continue;
    SimPrompt prompt;
    if (p.contains("label") && p["label"].is_string()) prompt.label = p["label"].get<std::string>();
    for (const nlohmann::json& t : p["tokens"]) {
      if (t.is_number_unsigned()) prompt.tokens.push_back(t.get<uint32_t>());
    }
    if (p.contains("expected") && p["expected"].is_array()) {
      for (const nlohmann::json& e : p["expected"]) {
        if (!e.is_object() || !e.contains("matched_tokens") || !e["matched_tokens"].is_number()) continue;
        ++prompt.holders;
        prompt.best_cached_tokens = std::max(prompt.best_cached_tokens, e["matched_tokens"].get<uint32_t>());
      }
    }
    out.prompts.push_back(std::move(prompt));
  }
  return out;
}

std::vector<std::vector<uint32_t>> MakePrompts(const std::vector<SimPrompt>& sources, uint32_t tokens, size_t count,
                                               uint64_t seed) {
  std::vector<const SimPrompt*> held;
  for (const SimPrompt& p : sources) {
    if (p.holders > 0 && !p.tokens.empty()) held.push_back(&p);
  }
  if (held.empty()) {
    for (const SimPrompt& p : sources) {
      if (!p.tokens.empty()) held.push_back(&p);
    }
  }
  // Longest cached prefix (capped at the wanted length) first, then more holders.
  std::stable_sort(held.begin(), held.end(), [tokens](const SimPrompt* a, const SimPrompt* b) {
    const uint32_t ca = std::min(a->best_cached_tokens, tokens), cb = std::min(b->best_cached_tokens, tokens);
    if (ca != cb) return ca > cb;
    return a->holders > b->holders;
  });
  sim::Rng rng(sim::Mix64(seed ^ (uint64_t{tokens} << 20)));
  std::vector<std::vector<uint32_t>> out;
  for (size_t i = 0; i < count; ++i) {
    std::vector<uint32_t> prompt;
    if (!held.empty()) {
      const SimPrompt& src = *held[i % held.size()];
      prompt.assign(src.tokens.begin(), src.tokens.begin() + std::min<size_t>(src.tokens.size(), tokens));
    }
    while (prompt.size() < tokens) prompt.push_back(static_cast<uint32_t>(rng.Below(32000)));
    out.push_back(std::move(prompt));
  }
  return out;
}

}  // namespace kvindex::bench
