#include "tools/sim/gateway.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kvindex/v1/kvindex.pb.h"
#include "proto/text_proto.h"
#include "spdlog/spdlog.h"
#include "tools/bench/latency_summary.h"
#include "tools/bench/local_stack.h"
#include "tools/sim/rng.h"
#include "tools/sim/workload.h"
#include "zmq.hpp"

namespace kvindex::sim {
namespace {

constexpr absl::Duration kReadyPoll = absl::Milliseconds(50);

std::string EngineKey(const std::string& pod, uint32_t dp_rank) { return absl::StrCat(pod, "#", dp_rank); }

// p50 and p99 of `ms`, in milliseconds.
std::pair<double, double> Percentiles(const std::vector<double>& ms) {
  std::vector<int64_t> ns;
  ns.reserve(ms.size());
  for (double m : ms) ns.push_back(static_cast<int64_t>(m * 1e6));
  const bench::LatencySummary s = bench::Summarize(ns);
  return {s.p50_us / 1e3, s.p99_us / 1e3};
}

}  // namespace

nlohmann::json GatewayReport::ToJson() const {
  return {{"requests", requests},
          {"prompt_tokens", prompt_tokens},
          {"reusable_tokens", reusable_tokens},
          {"cached_tokens", cached_tokens},
          {"recomputed_tokens", recomputed_tokens},
          {"routed_by_match", routed_by_match},
          {"hints", hints},
          {"rpc_errors", rpc_errors},
          {"match_p50_ms", match_p50_ms},
          {"match_p99_ms", match_p99_ms},
          {"hint_p50_ms", hint_p50_ms},
          {"hint_p99_ms", hint_p99_ms}};
}

Gateway::Gateway(client::KvIndexClient* client, std::vector<SimEngine*> engines, GatewayOptions options)
    : client_(client), engines_(std::move(engines)), options_(std::move(options)), sent_(engines_.size(), 0) {
  for (const SimEngine* engine : engines_) keys_.push_back(EngineKey(engine->pod_key(), engine->options().dp_rank));
}

absl::Status Gateway::Pump(absl::Time until) {
  std::vector<zmq::pollitem_t> items;
  std::vector<SimEngine*> item_engine;
  while (true) {
    const absl::Time now = absl::Now();
    absl::Time next = until;
    for (SimEngine* engine : engines_) {
      if (absl::Status s = engine->PublishDue(now); !s.ok()) return s;
      next = std::min(next, engine->NextDue());
    }
    if (now >= until) return absl::OkStatus();
    items.clear();
    item_engine.clear();
    for (SimEngine* engine : engines_) {
      zmq::pollitem_t item = engine->ReplayPollItem();
      if (item.socket == nullptr) continue;
      items.push_back(item);
      item_engine.push_back(engine);
    }
    const auto wait = std::chrono::milliseconds(
        std::max<int64_t>(0, absl::ToInt64Milliseconds(absl::Ceil(next - now, absl::Milliseconds(1)))));
    if (items.empty()) {
      absl::SleepFor(next - now);
      continue;
    }
    zmq::poll(items, wait);
    for (size_t i = 0; i < items.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
      if (absl::Status s = item_engine[i]->ServeReplay(); !s.ok()) return s;
    }
  }
}

absl::Status Gateway::Connect(const std::string& pods, const std::function<bool()>& stop) {
  v1::PodSnapshot snapshot;
  if (absl::Status s = ParseTextProto(pods, &snapshot); !s.ok()) return s;
  if (absl::Status s = bench::ApplySnapshot(*client_, snapshot); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + options_.ready_timeout;
  std::string waiting;
  while (true) {
    absl::StatusOr<v1::ListPodsResponse> listed = client_->ListPods();
    if (!listed.ok()) return listed.status();
    std::vector<std::string> live;
    for (const v1::PodInfo& pod : listed->pods()) {
      for (const v1::WorkerInfo& w : pod.workers()) {
        if (w.state() == "live") live.push_back(EngineKey(pod.key(), w.dp_rank()));
      }
    }
    waiting.clear();
    for (const std::string& key : keys_) {
      if (std::find(live.begin(), live.end(), key) == live.end()) absl::StrAppend(&waiting, " ", key);
    }
    if (waiting.empty()) return absl::OkStatus();
    if (stop()) return absl::CancelledError("stopped while waiting for the server");
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("the server does not follow these engines:", waiting));
    }
    if (absl::Status s = Pump(absl::Now() + kReadyPoll); !s.ok()) return s;
  }
}

size_t Gateway::Route(const std::vector<uint32_t>& tokens, GatewayReport& report) {
  v1::MatchRequest match;
  match.set_model(options_.model);
  match.set_lora_name(options_.lora_name);
  match.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  absl::Time start = absl::Now();
  absl::StatusOr<v1::MatchResponse> answer = client_->Match(match);
  match_ms_.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  std::optional<size_t> pick;
  if (!answer.ok()) {
    ++report.rpc_errors;
    spdlog::warn("gateway: Match failed: {}", answer.status().ToString());
  } else if (answer->pods_size() > 0 && answer->pods(0).score() > 0) {
    const std::string best = EngineKey(answer->pods(0).pod(), answer->pods(0).dp_rank());
    if (auto it = std::find(keys_.begin(), keys_.end(), best); it != keys_.end()) pick = it - keys_.begin();
    if (pick.has_value()) ++report.routed_by_match;
  }
  if (!pick.has_value()) pick = std::min_element(sent_.begin(), sent_.end()) - sent_.begin();
  if (options_.hint) {
    v1::RecordRoutingRequest hint;
    hint.set_model(options_.model);
    hint.set_lora_name(options_.lora_name);
    hint.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    hint.set_pod(engines_[*pick]->pod_key());
    hint.set_dp_rank(engines_[*pick]->options().dp_rank);
    start = absl::Now();
    absl::StatusOr<v1::RecordRoutingResponse> recorded = client_->RecordRouting(hint);
    hint_ms_.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    if (recorded.ok()) {
      ++report.hints;
    } else {
      ++report.rpc_errors;
      spdlog::warn("gateway: RecordRouting failed: {}", recorded.status().ToString());
    }
  }
  return *pick;
}

absl::StatusOr<GatewayReport> Gateway::Run(const std::function<bool()>& stop) {
  GatewayReport report;
  Rng rng(Mix64(options_.seed ^ 0x6A7E3A1ULL));
  const size_t burst_size = std::max<uint32_t>(options_.burst_size, 1);
  absl::Time due = absl::Now();
  std::vector<uint32_t> prefix, tokens;
  for (uint32_t b = 0; b < options_.bursts; ++b) {
    prefix.clear();
    AppendRandom(rng, options_.vocab_size, options_.prefix_tokens, prefix);
    for (size_t r = 0; r < burst_size; ++r) {
      if (stop()) return absl::CancelledError("stopped while routing");
      if (absl::Status s = Pump(due); !s.ok()) return s;
      tokens = prefix;
      AppendRandom(rng, options_.vocab_size, options_.suffix_tokens, tokens);
      const size_t pick = Route(tokens, report);
      // What the cluster holds of this prompt at this instant, before serving.
      uint64_t reusable = 0;
      for (SimEngine* engine : engines_) {
        reusable = std::max<uint64_t>(reusable, uint64_t{engine->CachedBlocks(tokens)} * engine->options().cache.block_size);
      }
      SimEngine& chosen = *engines_[pick];
      const uint64_t cached =
          uint64_t{chosen.ServeLater(tokens, absl::Now() + options_.event_delay)} * chosen.options().cache.block_size;
      ++sent_[pick];
      ++report.requests;
      report.prompt_tokens += tokens.size();
      report.reusable_tokens += reusable;
      report.cached_tokens += cached;
      report.recomputed_tokens += reusable - std::min(cached, reusable);
      due += options_.request_gap;
    }
    due += options_.burst_gap;
  }
  // Every event held goes out before the report (the truth then is the index's).
  if (absl::Status s = Pump(absl::Now() + options_.event_delay); !s.ok()) return s;
  std::tie(report.match_p50_ms, report.match_p99_ms) = Percentiles(match_ms_);
  std::tie(report.hint_p50_ms, report.hint_p99_ms) = Percentiles(hint_ms_);
  return report;
}

}  // namespace kvindex::sim
