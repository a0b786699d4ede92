#include "tests/reliability/sim_process.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/server/server_process.h"

namespace kvindex::testing {
namespace {

absl::StatusOr<std::string> Slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = Slurp(path);
  if (!text.ok()) return text.status();
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::DataLossError(absl::StrCat(path, " is not JSON"));
  return doc;
}

uint64_t ParseHex(const std::string& hex) {
  uint64_t value = 0;
  absl::string_view digits = hex;
  absl::ConsumePrefix(&digits, "0x");
  (void)absl::SimpleHexAtoi(digits, &value);
  return value;
}

std::string WorkerName(const std::string& pod, uint32_t rank) { return absl::StrCat(pod, "#", rank); }

// The pods of kvindex-sim's --pods_file (tools/sim/pod_snapshot_text.cc: one
// "field: value" a line, one "pods { ... }" block per pod). Read by hand, not
// by TextFormat: TSan builds cannot parse its map fields with Debian's protobuf.
absl::StatusOr<v1::PodSnapshot> ParsePodsFile(const std::string& text) {
  v1::PodSnapshot pods;
  v1::Pod* pod = nullptr;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line == "pods {") {
      pod = pods.add_pods();
      continue;
    }
    if (line == "}") {
      pod = nullptr;
      continue;
    }
    if (pod == nullptr || line.empty() || line[0] == '#' || absl::StartsWith(line, "labels ")) continue;
    const size_t colon = line.find(": ");
    if (colon == absl::string_view::npos) return absl::DataLossError(absl::StrCat("pods file line: ", line));
    const absl::string_view field = line.substr(0, colon);
    absl::string_view value = line.substr(colon + 2);
    std::string text_value;
    if (absl::ConsumePrefix(&value, "\"") && absl::ConsumeSuffix(&value, "\"")) {
      if (!absl::CUnescape(value, &text_value)) return absl::DataLossError(absl::StrCat("pods file line: ", line));
    }
    uint32_t number = 0;
    const bool numeric = absl::SimpleAtoi(value, &number);
    if (field == "namespace") pod->set_namespace_(text_value);
    else if (field == "name") pod->set_name(text_value);
    else if (field == "ip") pod->set_ip(text_value);
    else if (field == "phase") pod->set_phase(text_value);
    else if (field == "model") pod->set_model(text_value);
    else if (field == "lora_name") pod->set_lora_name(text_value);
    else if (field == "topic") pod->set_topic(text_value);
    else if (field == "events_port" && numeric) pod->set_events_port(number);
    else if (field == "replay_port" && numeric) pod->set_replay_port(number);
    else if (field == "dp_size" && numeric) pod->set_dp_size(number);
    else return absl::DataLossError(absl::StrCat("pods file line: ", line));
  }
  for (v1::Pod& p : *pods.mutable_pods()) {
    p.set_kv_events_enabled(true);
    if (p.dp_size() == 0) p.set_dp_size(1);
  }
  return pods;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SimProcess>> SimProcess::Start(std::vector<std::string> args, bool read_pods) {
  std::unique_ptr<SimProcess> sim(new SimProcess());
  static int serial = 0;
  sim->dir_ = (std::filesystem::temp_directory_path() /
               absl::StrCat("kvindex_sim_", getpid(), "_", ++serial, "_", absl::ToUnixMicros(absl::Now())))
                  .string();
  std::filesystem::create_directories(sim->dir_);
  std::vector<std::string> argv = {BinPath("kvindex-sim"),
                                   absl::StrCat("--truth_file=", sim->dir_, "/truth.json"),
                                   absl::StrCat("--prompts_file=", sim->dir_, "/prompts.json"),
                                   absl::StrCat("--pods_file=", sim->dir_, "/pods.textproto"),
                                   "--truth_interval=200ms", "--stats_interval=0"};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(std::move(argv));
  if (!process.ok()) return process.status();
  sim->process_ = *std::move(process);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  if (!read_pods) {
    // The pods file is written once, atomically, as soon as every socket is bound.
    while (absl::Now() < deadline) {
      if (absl::StatusOr<std::string> text = Slurp(sim->dir_ + "/pods.textproto"); text.ok()) {
        absl::StatusOr<v1::PodSnapshot> pods = ParsePodsFile(*text);
        if (!pods.ok()) return pods.status();
        sim->pods_ = *std::move(pods);
        for (const v1::Pod& pod : sim->pods_.pods()) {
          // kvindex's convention, which the sim follows with --base_port (rank r on port + r).
          for (uint32_t r = 0; r < pod.dp_size(); ++r) {
            sim->engine_ports_.emplace_back(pod.events_port() + r, pod.replay_port() == 0 ? 0 : pod.replay_port() + r);
          }
        }
        return sim;
      }
      if (sim->process_->Wait(absl::ZeroDuration()).has_value()) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return absl::UnavailableError(absl::StrCat("kvindex-sim did not come up; stderr:\n", sim->process_->Stderr()));
  }
  // The pods come from the truth file (JSON), which also has every worker's ports.
  while (absl::Now() < deadline) {
    if (absl::StatusOr<nlohmann::json> truth = ReadJson(sim->dir_ + "/truth.json"); truth.ok()) {
      for (const auto& p : (*truth)["pods"]) {
        v1::Pod* pod = sim->pods_.add_pods();
        pod->set_namespace_(p["namespace"].get<std::string>());
        pod->set_name(p["name"].get<std::string>());
        pod->set_ip(p["ip"].get<std::string>());
        pod->set_phase("Running");
        pod->set_model(p["model"].get<std::string>());
        pod->set_lora_name(p["lora_name"].get<std::string>());
        pod->set_kv_events_enabled(true);
        pod->set_events_port(p["events_port"].get<uint32_t>());
        pod->set_replay_port(p["replay_port"].is_null() ? 0 : p["replay_port"].get<uint32_t>());
        pod->set_dp_size(p["dp_size"].get<uint32_t>());
        pod->set_topic(p["topic"].get<std::string>());
        for (const auto& w : p["workers"]) {
          sim->engine_ports_.emplace_back(w["events_port"].get<uint32_t>(),
                                          w["replay_port"].is_null() ? 0 : w["replay_port"].get<uint32_t>());
        }
      }
      return sim;
    }
    if (sim->process_->Wait(absl::ZeroDuration()).has_value()) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::UnavailableError(absl::StrCat("kvindex-sim did not come up; stderr:\n", sim->process_->Stderr()));
}

SimProcess::~SimProcess() {
  process_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::Status SimProcess::WaitTrafficDone(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    // kvindex-sim logs to stdout (spdlog's default logger).
    if (absl::StrContains(process_->Stdout(), "traffic done") || absl::StrContains(process_->Stderr(), "traffic done")) {
      // The truth is written right after that line: wait for a document
      // stamped after it.
      const double seen = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
      while (absl::Now() < deadline) {
        absl::StatusOr<nlohmann::json> truth = Truth();
        absl::StatusOr<nlohmann::json> prompts = Prompts();
        if (truth.ok() && prompts.ok() && (*truth)["time"].get<double>() >= seen &&
            (*prompts)["time"].get<double>() >= seen) {
          return absl::OkStatus();
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
      break;
    }
    if (process_->Wait(absl::ZeroDuration()).has_value()) {
      return absl::InternalError(absl::StrCat("kvindex-sim exited; stderr:\n", process_->Stderr()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError("kvindex-sim traffic did not finish");
}

absl::StatusOr<nlohmann::json> SimProcess::Truth() const { return ReadJson(dir_ + "/truth.json"); }
absl::StatusOr<nlohmann::json> SimProcess::Prompts() const { return ReadJson(dir_ + "/prompts.json"); }

std::string SimProcess::SamePortsFlag() const {
  std::vector<std::string> parts;
  for (const auto& [events, replay] : engine_ports_) {
    parts.push_back(replay == 0 ? absl::StrCat(events) : absl::StrCat(events, ":", replay));
  }
  return absl::StrCat("--ports=", absl::StrJoin(parts, ","));
}

absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> Workers(client::KvIndexClient& client) {
  absl::StatusOr<v1::ListPodsResponse> pods = client.ListPods();
  if (!pods.ok()) return pods.status();
  std::vector<std::pair<std::string, v1::WorkerInfo>> out;
  for (const v1::PodInfo& pod : pods->pods()) {
    for (const v1::WorkerInfo& w : pod.workers()) out.emplace_back(WorkerName(pod.key(), w.dp_rank()), w);
  }
  return out;
}

absl::Status WaitForCatchUp(client::KvIndexClient& client, const nlohmann::json& truth, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string lag;
  while (true) {
    lag.clear();
    absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> workers = Workers(client);
    if (!workers.ok()) return workers.status();
    std::map<std::string, v1::WorkerInfo> by_name(workers->begin(), workers->end());
    for (const auto& pod : truth["pods"]) {
      for (const auto& w : pod["workers"]) {
        const std::string name = WorkerName(pod["key"].get<std::string>(), w["dp_rank"].get<uint32_t>());
        const int64_t want = w["last_seq"].get<int64_t>();
        auto it = by_name.find(name);
        if (it == by_name.end()) {
          absl::StrAppend(&lag, name, ": not followed; ");
        } else if (it->second.last_seq() != want || it->second.state() == "replaying") {
          absl::StrAppend(&lag, name, ": last_seq ", it->second.last_seq(), " of ", want, " (", it->second.state(),
                          "); ");
        }
      }
    }
    if (lag.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) return absl::FailedPreconditionError(absl::StrCat("server behind: ", lag));
    absl::SleepFor(absl::Milliseconds(50));
  }
}

namespace {

// Media with at least one block, as the server reports them (a map without zeros).
using Media = std::map<std::string, uint64_t>;

template <typename Map>
Media NonZero(const Map& media) {
  Media out;
  for (const auto& [medium, n] : media) {
    if (n > 0) out[medium] = n;
  }
  return out;
}

std::string Show(const Media& media) {
  std::vector<std::string> parts;
  for (const auto& [medium, n] : media) parts.push_back(absl::StrCat(medium, ":", n));
  return absl::StrCat("{", absl::StrJoin(parts, ","), "}");
}

// One worker's answer to a Match: (pod, rank) -> (blocks, tokens, blocks per medium).
using Answer = std::map<std::pair<std::string, uint32_t>, std::tuple<uint32_t, uint32_t, Media>>;

std::string Show(const Answer& answer) {
  std::vector<std::string> parts;
  for (const auto& [worker, value] : answer) {
    const auto& [blocks, tokens, media] = value;
    parts.push_back(absl::StrCat(worker.first, "#", worker.second, "=", blocks, "/", tokens, "t", Show(media)));
  }
  return absl::StrCat("{", absl::StrJoin(parts, " "), "}");
}

Answer AnswerOf(const v1::MatchResponse& response) {
  Answer out;
  for (const v1::PodMatch& m : response.pods()) {
    out[{m.pod(), m.dp_rank()}] = {m.matched_blocks(), m.matched_tokens(), NonZero(m.blocks_by_medium())};
  }
  return out;
}

// A followed worker of the truth: its pod's identity and what its engine holds.
struct TruthWorker {
  std::string model, lora_name;
  uint32_t block_size = 0;
  std::map<uint64_t, std::vector<std::string>> media;  // index hash -> media holding it
  std::vector<uint64_t> leaves;                        // held blocks no held block names as parent
  size_t keep = 0;                                     // hybrid: blocks group 1 must hold ending at a hit
  std::set<uint64_t> group1;                           // hybrid: blocks group 1 holds
};

}  // namespace

absl::StatusOr<TruthComparison> CompareWithTruth(client::KvIndexClient& client, const nlohmann::json& truth,
                                                 const nlohmann::json& prompts,
                                                 const std::vector<std::string>& only_pods) {
  TruthComparison seen;
  std::vector<std::string> problems;
  auto problem = [&problems](std::string what) {
    if (problems.size() < 20) problems.push_back(std::move(what));
  };
  const std::set<std::string> only(only_pods.begin(), only_pods.end());
  auto followed = [&only](const std::string& pod) { return only.empty() || only.count(pod) > 0; };

  absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> workers = Workers(client);
  if (!workers.ok()) return workers.status();
  std::map<std::string, v1::WorkerInfo> by_name(workers->begin(), workers->end());

  // The truth's followed workers, and the parent of every index hash they hold
  // (an index hash names its whole chain, so one map serves every worker).
  std::map<std::pair<std::string, uint32_t>, TruthWorker> truth_workers;
  std::map<uint64_t, std::optional<uint64_t>> parent_of;
  std::set<std::string> truth_names;
  for (const auto& pod : truth["pods"]) {
    const std::string key = pod["key"].get<std::string>();
    if (!followed(key)) continue;
    for (const auto& w : pod["workers"]) {
      const uint32_t rank = w["dp_rank"].get<uint32_t>();
      const std::string name = WorkerName(key, rank);
      truth_names.insert(name);
      TruthWorker& worker = truth_workers[{key, rank}];
      worker.model = pod["model"].get<std::string>();
      worker.lora_name = pod["lora_name"].get<std::string>();
      worker.block_size = pod["block_size"].get<uint32_t>();
      if (pod.contains("groups")) worker.keep = std::max<size_t>(pod["groups"][1]["keep"].get<size_t>(), 1);
      Media tiers;
      std::set<uint64_t> parents;
      for (const auto& b : w["held"]) {
        const uint64_t hash = ParseHex(b["hash"].get<std::string>());
        const std::optional<uint64_t> up =
            b["parent"].is_null() ? std::nullopt : std::optional<uint64_t>(ParseHex(b["parent"].get<std::string>()));
        parent_of[hash] = up;
        if (b.value("group1", false)) worker.group1.insert(hash);
        if (up.has_value()) parents.insert(*up);
        for (const auto& m : b["media"]) {
          worker.media[hash].push_back(m.get<std::string>());
          ++tiers[m.get<std::string>()];
        }
      }
      for (const auto& [hash, media] : worker.media) {
        if (parents.count(hash) == 0) worker.leaves.push_back(hash);
      }
      ++seen.workers;
      seen.blocks += w["blocks"].get<uint64_t>() + w.value("group1_blocks", uint64_t{0});
      seen.cpu_blocks += w["cpu_blocks"].get<uint64_t>();
      if (worker.media.size() != w["blocks"].get<uint64_t>()) {
        problem(absl::StrCat(name, ": the truth lists ", worker.media.size(), " held blocks of ",
                             w["blocks"].get<uint64_t>()));
      }

      auto it = by_name.find(name);
      if (it == by_name.end()) {
        problem(absl::StrCat(name, ": not followed"));
        continue;
      }
      if (it->second.blocks() != w["blocks"].get<uint64_t>()) {
        problem(absl::StrCat(name, ": holds ", it->second.blocks(), " blocks, the engine ", w["blocks"].get<uint64_t>()));
      }
      const Media want_tiers = NonZero(Media{{"GPU", w["gpu_blocks"].get<uint64_t>()},
                                             {"CPU", w["cpu_blocks"].get<uint64_t>()}});
      if (NonZero(tiers) != want_tiers) {
        problem(absl::StrCat(name, ": the truth's media ", Show(NonZero(tiers)), " disagree with its counts ",
                             Show(want_tiers)));
      }
      const Media got_tiers = NonZero(it->second.blocks_by_medium());
      if (got_tiers != want_tiers) {
        problem(absl::StrCat(name, ": holds ", Show(got_tiers), " by medium, the engine ", Show(want_tiers)));
      }
    }
  }

  // Nobody else holds anything, and the index's entries are the engines' blocks.
  for (const auto& [name, info] : by_name) {
    if (truth_names.count(name) == 0 && info.blocks() > 0) {
      problem(absl::StrCat(name, ": not in the truth, holds ", info.blocks(), " blocks"));
    }
  }
  absl::StatusOr<v1::GetStatsResponse> stats = client.GetStats();
  if (!stats.ok()) return stats.status();
  if (stats->entries() != seen.blocks) {
    problem(absl::StrCat("the index holds ", stats->entries(), " (block, worker) entries, the engines ", seen.blocks));
  }

  // Every held chain, asked once: the answer the truth implies, worker by worker.
  std::set<std::tuple<std::string, std::string, uint64_t>> leaves;  // (model, lora, leaf)
  for (const auto& [worker, t] : truth_workers) {
    for (uint64_t leaf : t.leaves) leaves.emplace(t.model, t.lora_name, leaf);
  }
  for (const auto& [model, lora, leaf] : leaves) {
    std::vector<uint64_t> chain;
    for (std::optional<uint64_t> h = leaf; h.has_value() && chain.size() <= parent_of.size();) {
      chain.push_back(*h);
      auto up = parent_of.find(*h);
      h = up == parent_of.end() ? std::nullopt : up->second;
    }
    std::reverse(chain.begin(), chain.end());
    Answer want;
    for (const auto& [worker, t] : truth_workers) {
      if (t.model != model || t.lora_name != lora) continue;
      uint32_t matched = 0;
      for (uint64_t h : chain) {
        if (t.media.count(h) == 0) break;
        ++matched;
      }
      // A hybrid worker: vLLM's hit, the longest run whose last `keep` blocks group 1 holds.
      const uint32_t run = matched;
      for (; t.keep > 0 && matched > 0; --matched) {
        bool accepted = true;
        for (size_t i = matched > t.keep ? matched - t.keep : 0; i < matched && accepted; ++i) {
          accepted = t.group1.count(chain[i]) > 0;
        }
        if (accepted) break;
      }
      if (matched < run) ++seen.hybrid_cuts;
      Media media;
      for (uint32_t i = 0; i < matched; ++i) {
        for (const std::string& m : t.media.at(chain[i])) ++media[m];
      }
      if (matched == 0) continue;
      want[worker] = {matched, matched * t.block_size, media};
      if (matched < chain.size()) ++seen.partial_matches;
    }
    v1::MatchRequest request;
    request.set_model(model);
    request.set_lora_name(lora);
    for (uint64_t h : chain) request.add_block_hashes(h);
    absl::StatusOr<v1::MatchResponse> match = client.Match(request);
    if (!match.ok()) return match.status();
    ++seen.chains;
    const Answer got = AnswerOf(*match);
    if (got != want) {
      problem(absl::StrCat("chain of ", chain.size(), " blocks to leaf 0x", absl::Hex(leaf), ": expected ", Show(want),
                           " got ", Show(got)));
    }
  }

  for (const auto& prompt : prompts["prompts"]) {
    v1::MatchRequest request;
    request.set_model(prompts["model"].get<std::string>());
    for (const auto& t : prompt["tokens"]) request.add_token_ids(t.get<uint32_t>());
    if (prompt.contains("cache_salt")) request.set_cache_salt(prompt["cache_salt"].get<std::string>());
    for (const auto& in : prompt.value("mm_inputs", nlohmann::json::array())) {
      v1::MultimodalInput* mm = request.add_mm_inputs();
      mm->set_identifier(in["identifier"].get<std::string>());
      mm->set_offset(in["offset"].get<uint32_t>());
      mm->set_length(in["length"].get<uint32_t>());
    }
    absl::StatusOr<v1::MatchResponse> match = client.Match(request);
    if (!match.ok()) return match.status();
    ++seen.prompts;
    Answer want;
    for (const auto& e : prompt["expected"]) {
      if (!followed(e["pod"].get<std::string>())) continue;
      Media media;
      for (const auto& [medium, n] : e["blocks_by_medium"].items()) media[medium] = n.get<uint64_t>();
      want[{e["pod"].get<std::string>(), e["dp_rank"].get<uint32_t>()}] = {
          e["matched_blocks"].get<uint32_t>(), e["matched_tokens"].get<uint32_t>(), NonZero(media)};
      ++seen.prompt_matches;
    }
    const Answer got = AnswerOf(*match);
    if (want != got) {
      problem(absl::StrCat("prompt ", prompt["label"].get<std::string>(), ": expected ", Show(want), " got ",
                           Show(got)));
    }
  }
  if (problems.empty()) return seen;
  return absl::FailedPreconditionError(absl::StrJoin(problems, "\n"));
}

}  // namespace kvindex::testing
