// kvindex-soak: a soak run against real processes (scripts/soak). Starts
// kvindex-server and kvindex-sim, follows the sim's pods, then for --minutes
// runs Match load (--match_threads; the sim's sample prompts with their
// cache_salt and mm_inputs, and random ones), the engines' event traffic (the
// issue-15 mix: chunked CPU offloading, hybrid window and Mamba pods,
// multimodal and salted prompts, next to single-group pods) and pod churn
// (upsert + delete of extra pods over SyncPods), sampling every --sample
// seconds the server's RSS, Match latency (p50/p99/max) and error counts.
// Prints one line per sample and a JSON summary; exits 1 when any call failed,
// the server or the sim died, events were lost, or RSS grew more than
// --rss_growth (10 %) over its value at the end of the warm-up (--warmup,
// default a third of the run, at least 30 s).

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kvindex_client.h"
#include "core/util/resident_memory.h"
#include "nlohmann/json.hpp"
#include "tests/reliability/sim_process.h"
#include "tests/server/server_process.h"
#include "tests/testing/dead_port.h"
#include "tests/testing/pods.h"

ABSL_FLAG(double, minutes, 2, "How long to run the load.");
ABSL_FLAG(absl::Duration, warmup, absl::ZeroDuration(), "Warm-up before RSS must stay flat; 0: a third of the run, >= 30 s.");
ABSL_FLAG(absl::Duration, sample, absl::Seconds(5), "Sampling interval.");
ABSL_FLAG(double, rss_growth, 0.10, "Largest RSS growth allowed after the warm-up (fraction).");
ABSL_FLAG(int32_t, pods, 4, "Simulated engine pods.");
ABSL_FLAG(double, rate, 40, "Requests per second per engine.");
ABSL_FLAG(int32_t, match_threads, 2, "Threads calling Match back to back.");
ABSL_FLAG(absl::Duration, churn_every, absl::Milliseconds(50), "Pod churn: one upsert + delete this often; 0: none.");

namespace kvindex::testing {
namespace {

struct Window {
  std::vector<int64_t> latencies_us;
  uint64_t errors = 0;
};

class Load {
 public:
  explicit Load(client::KvIndexClient* client) : client_(client) {}

  void SetPrompts(std::vector<v1::MatchRequest> prompts) {
    absl::MutexLock lock(&mu_);
    if (!prompts.empty()) prompts_ = std::move(prompts);
  }

  void RunMatches(int seed) {
    std::mt19937 rng(seed);
    while (!stop_.load()) {
      v1::MatchRequest request;
      request.set_model("sim-model");
      {
        absl::MutexLock lock(&mu_);
        if (!prompts_.empty() && rng() % 4 != 0) request = prompts_[rng() % prompts_.size()];
      }
      if (request.token_ids_size() == 0) {
        for (int i = 0; i < 512; ++i) request.add_token_ids(rng() % 32000);
      }
      const absl::Time start = absl::Now();
      absl::StatusOr<v1::MatchResponse> response = client_->Match(request);
      const int64_t us = absl::ToInt64Microseconds(absl::Now() - start);
      absl::MutexLock lock(&mu_);
      window_.latencies_us.push_back(us);
      all_us_.push_back(us);
      if (!response.ok()) {
        ++window_.errors;
        ++match_errors_;
        last_error_ = response.status().ToString();
      }
    }
  }

  void RunChurn(absl::Duration every, uint32_t dead_port) {
    for (uint64_t i = 0; !stop_.load(); ++i) {
      const v1::PodUpdate up =
          testutil::Upsert(testutil::EnginePod("soak-churn", absl::StrCat("p-", i % 20), "sim-model", dead_port));
      const v1::PodUpdate down = testutil::Delete(absl::StrCat("soak-churn/p-", i % 20));
      absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client_->SyncPods({up, down});
      absl::MutexLock lock(&mu_);
      if (!acks.ok() || (*acks)[0].outcome() != v1::POD_OUTCOME_SUBSCRIBED ||
          (*acks)[1].outcome() != v1::POD_OUTCOME_REMOVED) {
        ++churn_errors_;
        last_error_ = acks.ok() ? (*acks)[0].reason() : acks.status().ToString();
      } else {
        ++churn_cycles_;
      }
      absl::SleepFor(every);
    }
  }

  Window TakeWindow() {
    absl::MutexLock lock(&mu_);
    Window w = std::move(window_);
    window_ = Window();
    return w;
  }

  void Stop() { stop_ = true; }

  nlohmann::json Totals() {
    absl::MutexLock lock(&mu_);
    std::vector<int64_t> all = all_us_;
    std::sort(all.begin(), all.end());
    auto pct = [&all](double p) { return all.empty() ? 0 : all[static_cast<size_t>(p * (all.size() - 1))]; };
    return {{"matches", all.size()},         {"match_errors", match_errors_}, {"match_p50_us", pct(0.5)},
            {"match_p99_us", pct(0.99)},      {"match_max_us", all.empty() ? 0 : all.back()},
            {"churn_cycles", churn_cycles_}, {"churn_errors", churn_errors_}, {"last_error", last_error_}};
  }

  uint64_t errors() {
    absl::MutexLock lock(&mu_);
    return match_errors_ + churn_errors_;
  }

 private:
  client::KvIndexClient* const client_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::vector<v1::MatchRequest> prompts_ ABSL_GUARDED_BY(mu_);
  Window window_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> all_us_ ABSL_GUARDED_BY(mu_);
  uint64_t match_errors_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t churn_errors_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t churn_cycles_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
};

// The sim's sample prompts as the gateway would send them: tokens, and the
// tenant's cache_salt and the images' mm_inputs where the prompt has them.
std::vector<v1::MatchRequest> PromptsOf(SimProcess& sim) {
  std::vector<v1::MatchRequest> out;
  absl::StatusOr<nlohmann::json> prompts = sim.Prompts();
  if (!prompts.ok()) return out;
  for (const auto& p : (*prompts)["prompts"]) {
    v1::MatchRequest& request = out.emplace_back();
    request.set_model((*prompts)["model"].get<std::string>());
    for (const auto& t : p["tokens"]) request.add_token_ids(t.get<uint32_t>());
    if (p.contains("cache_salt")) request.set_cache_salt(p["cache_salt"].get<std::string>());
    for (const auto& in : p.value("mm_inputs", nlohmann::json::array())) {
      v1::MultimodalInput* mm = request.add_mm_inputs();
      mm->set_identifier(in["identifier"].get<std::string>());
      mm->set_offset(in["offset"].get<uint32_t>());
      mm->set_length(in["length"].get<uint32_t>());
    }
  }
  return out;
}

int Main() {
  const absl::Duration run = absl::Seconds(absl::GetFlag(FLAGS_minutes) * 60);
  absl::Duration warmup = absl::GetFlag(FLAGS_warmup);
  if (warmup == absl::ZeroDuration()) warmup = std::max(run / 3, absl::Seconds(30));
  const absl::Duration sample = absl::GetFlag(FLAGS_sample);

  absl::StatusOr<ServerProcess> server = StartServerProcess({});
  if (!server.ok()) {
    std::fprintf(stderr, "kvindex-soak: %s\n", server.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      {"--pods=" + std::to_string(absl::GetFlag(FLAGS_pods)), "--base_port=0",
       absl::StrCat("--rate=", absl::GetFlag(FLAGS_rate)), "--capacity_blocks=1024", "--cpu_capacity_blocks=512",
       "--system_prompts=4", "--system_prompt_tokens=256", "--conversations=16", "--turn_tokens=128",
       "--layout=mixed", "--hash=mixed", "--log_level=warn", "--truth_interval=5s",
       // The issue-15 engines, round robin over the pods (layouts map, array,
       // sglang, map, ...): a chunk-offloading sliding-window hybrid, a Mamba
       // hybrid, two single-group pods; multimodal and salted prompts.
       "--offload_chunk_blocks=4,0,0,0", "--hybrid=window:64,mamba,none,none", "--mm_fraction=0.25",
       "--salted_tenants=2"});
  if (!sim.ok()) {
    std::fprintf(stderr, "kvindex-soak: %s\n", sim.status().ToString().c_str());
    return 1;
  }
  client::ClientOptions options;
  options.server = server->address;
  options.timeout = absl::Seconds(10);
  std::unique_ptr<client::KvIndexClient> client = *client::KvIndexClient::Create(options);
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client->SyncPods({testutil::SnapshotUpdate((*sim)->pods())});
  if (!acks.ok()) {
    std::fprintf(stderr, "kvindex-soak: SyncPods: %s\n", acks.status().ToString().c_str());
    return 1;
  }

  Load load(client.get());
  std::vector<std::thread> threads;
  for (int i = 0; i < absl::GetFlag(FLAGS_match_threads); ++i) threads.emplace_back([&load, i] { load.RunMatches(i); });
  // Churn pods point at an endpoint held dead until the process exits.
  absl::StatusOr<std::unique_ptr<testutil::DeadPort>> dead = testutil::DeadPort::Bind();
  if (!dead.ok()) {
    std::fprintf(stderr, "kvindex-soak: %s\n", dead.status().ToString().c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_churn_every) > absl::ZeroDuration()) {
    threads.emplace_back(
        [&load, dead_port = (*dead)->port()] { load.RunChurn(absl::GetFlag(FLAGS_churn_every), dead_port); });
  }

  const absl::Time start = absl::Now();
  uint64_t rss_at_warmup = 0, rss_max_after = 0, rss_min_after = ~uint64_t{0};
  bool alive = true;
  std::vector<nlohmann::json> samples;
  std::printf("%8s %9s %9s %9s %8s %10s %10s %10s %8s\n", "t_s", "rss_mib", "p50_us", "p99_us", "errors", "entries",
              "evictions", "events", "matches");
  while (absl::Now() - start < run) {
    absl::SleepFor(sample);
    const double t = absl::ToDoubleSeconds(absl::Now() - start);
    load.SetPrompts(PromptsOf(**sim));
    if (server->process->Wait(absl::ZeroDuration()).has_value() || (*sim)->process().Wait(absl::ZeroDuration()).has_value()) {
      alive = false;
      break;
    }
    const uint64_t rss = ResidentBytes(server->process->pid());
    Window w = load.TakeWindow();
    std::sort(w.latencies_us.begin(), w.latencies_us.end());
    auto pct = [&w](double p) {
      return w.latencies_us.empty() ? 0 : w.latencies_us[static_cast<size_t>(p * (w.latencies_us.size() - 1))];
    };
    absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats();
    if (!stats.ok()) {
      alive = false;
      break;
    }
    if (absl::Now() - start < warmup) {
      rss_at_warmup = rss;
    } else {
      rss_max_after = std::max(rss_max_after, rss);
      rss_min_after = std::min(rss_min_after, rss);
    }
    std::printf("%8.0f %9.1f %9lld %9lld %8llu %10llu %10llu %10llu %8zu\n", t, rss / 1048576.0,
                static_cast<long long>(pct(0.5)), static_cast<long long>(pct(0.99)),
                static_cast<unsigned long long>(w.errors), static_cast<unsigned long long>(stats->entries()),
                static_cast<unsigned long long>(stats->evictions()), static_cast<unsigned long long>(stats->events()),
                w.latencies_us.size());
    std::fflush(stdout);
    samples.push_back({{"t", t}, {"rss", rss}, {"stats", {{"entries", stats->entries()},
                                                          {"decode_errors", stats->decode_errors()},
                                                          {"uncovered_gaps", stats->uncovered_gaps()},
                                                          {"restarts", stats->restarts()},
                                                          {"events", stats->events()}}}});
  }
  load.Stop();
  for (std::thread& t : threads) t.join();

  absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats();
  nlohmann::json summary = load.Totals();
  summary["seconds"] = absl::ToDoubleSeconds(absl::Now() - start);
  summary["warmup_seconds"] = absl::ToDoubleSeconds(warmup);
  summary["rss_at_warmup_mib"] = rss_at_warmup / 1048576.0;
  summary["rss_max_after_warmup_mib"] = rss_max_after / 1048576.0;
  summary["rss_growth"] = rss_at_warmup > 0 && rss_max_after > 0
                              ? static_cast<double>(rss_max_after) / rss_at_warmup - 1.0
                              : 0.0;
  summary["processes_alive"] = alive;
  if (stats.ok()) {
    summary["events"] = stats->events();
    summary["decode_errors"] = stats->decode_errors();
    summary["uncovered_gaps"] = stats->uncovered_gaps();
    summary["entries"] = stats->entries();
    summary["evictions"] = stats->evictions();
    summary["matches_served"] = stats->matches();
  }

  // A graceful stop is part of the run.
  server->process->Signal(SIGTERM);
  const std::optional<int> server_exit = server->process->Wait(absl::Seconds(10));
  summary["server_exit_code"] = server_exit.has_value() ? *server_exit : -1;
  (*sim)->process().Signal(SIGTERM);
  (void)(*sim)->process().Wait(absl::Seconds(10));

  std::vector<std::string> failures;
  if (!alive) failures.push_back("a process died or stopped answering");
  if (load.errors() > 0) failures.push_back(absl::StrCat(load.errors(), " failed calls"));
  if (!stats.ok()) failures.push_back("GetStats failed at the end");
  if (stats.ok() && (stats->decode_errors() > 0 || stats->uncovered_gaps() > 0)) {
    failures.push_back("events were lost or undecodable");
  }
  if (stats.ok() && stats->events() == 0) failures.push_back("no event was applied");
  if (rss_at_warmup == 0 || rss_max_after == 0) {
    failures.push_back("the run was too short to sample RSS before and after the warm-up");
  } else if (summary["rss_growth"].get<double>() > absl::GetFlag(FLAGS_rss_growth)) {
    failures.push_back(absl::StrCat("RSS grew ", summary["rss_growth"].get<double>() * 100, " % after the warm-up"));
  }
  if (!server_exit.has_value() || *server_exit != 0) failures.push_back("kvindex-server did not stop cleanly on SIGTERM");
  summary["failures"] = failures;
  summary["ok"] = failures.empty();
  std::printf("%s\n", summary.dump(2).c_str());
  if (!failures.empty()) std::fprintf(stderr, "kvindex-soak: FAILED\n%s\n", server->process->Stderr().c_str());
  return failures.empty() ? 0 : 1;
}

}  // namespace
}  // namespace kvindex::testing

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("soak run of kvindex-server under mixed load; see scripts/soak");
  absl::ParseCommandLine(argc, argv);
  return kvindex::testing::Main();
}
