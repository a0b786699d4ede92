#include "tools/sim/truth_writer.h"

#include <algorithm>
#include <tuple>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tools/sim/atomic_file.h"

namespace kvindex::sim {

TruthWriter::Documents TruthWriter::Snapshot(absl::Span<SimEngine* const> engines) {
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  // Seeded by what the engines have done, not by how often this ran: the
  // same state samples the same prompts (a run's final truth does not depend
  // on the timing of the writes before it).
  uint64_t done = 0;
  for (SimEngine* engine : engines) {
    const EngineCounters c = engine->counters();
    done = Mix64(done ^ c.requests) ^ Mix64(c.batches ^ (c.restarts << 32));
  }
  Rng rng(Mix64(options_.seed ^ Mix64(done)));
  std::vector<SamplePrompt> prompts;
  if (!engines.empty()) prompts = engines.front()->SampleShared(rng);
  for (SimEngine* engine : engines) {
    for (SamplePrompt& p : engine->SampleConversations(options_.conversations_per_engine, rng)) {
      prompts.push_back(std::move(p));
    }
  }

  std::vector<EngineTruth> truths;
  std::vector<nlohmann::json> expected(prompts.size(), nlohmann::json::array());
  std::vector<CachedPrefix> held;
  for (SimEngine* engine : engines) {
    truths.push_back(engine->Expected(prompts, &held));
    const EngineTruth& t = truths.back();
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (held[i].blocks == 0) continue;
      nlohmann::json media = nlohmann::json::object();
      if (held[i].gpu > 0) media[kGpu] = held[i].gpu;
      if (held[i].cpu > 0) media[kCpu] = held[i].cpu;
      expected[i].push_back({{"pod", t.pod},
                             {"dp_rank", t.dp_rank},
                             {"matched_blocks", held[i].blocks},
                             {"matched_tokens", held[i].blocks * t.block_size},
                             {"blocks_by_medium", std::move(media)},
                             {"block_size", t.block_size},
                             {"last_seq", t.last_seq}});
    }
  }

  nlohmann::json prompt_list = nlohmann::json::array();
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::sort(expected[i].begin(), expected[i].end(), [](const nlohmann::json& a, const nlohmann::json& b) {
      return std::make_tuple(-a["matched_blocks"].get<int64_t>(), a["pod"].get<std::string>(),
                             a["dp_rank"].get<uint32_t>()) <
             std::make_tuple(-b["matched_blocks"].get<int64_t>(), b["pod"].get<std::string>(),
                             b["dp_rank"].get<uint32_t>());
    });
    nlohmann::json prompt = {{"label", prompts[i].label}, {"tokens", prompts[i].tokens}};
    AddKeysJson(prompts[i].keys, prompt);
    prompt["expected"] = std::move(expected[i]);
    prompt_list.push_back(std::move(prompt));
  }
  Documents docs;
  docs.truth = GroundTruthJson(truths, now);
  docs.prompts = {{"time", now},
                  {"model", truths.empty() ? std::string() : truths.front().model},
                  {"prompts", std::move(prompt_list)}};
  return docs;
}

absl::Status TruthWriter::Write(absl::Span<SimEngine* const> engines) {
  if (options_.truth_file.empty() && options_.prompts_file.empty()) return absl::OkStatus();
  const Documents docs = Snapshot(engines);
  absl::Status status;
  if (!options_.truth_file.empty()) status.Update(WriteFileAtomically(options_.truth_file, docs.truth.dump()));
  if (!options_.prompts_file.empty()) status.Update(WriteFileAtomically(options_.prompts_file, docs.prompts.dump()));
  return status;
}

}  // namespace kvindex::sim
