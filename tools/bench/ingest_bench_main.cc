// kvindex-ingest-bench: end-to-end ingestion of kvindex-server, with real
// processes on 127.0.0.1: kvindex-sim engines publish vLLM KV events over
// ZeroMQ, the server subscribes, and this tool reads what it applied.
//
// Two measurements:
//  - lag: kvindex-sim pods at a controlled total rate (--lag_rate blocks/s,
//    default 100k) plus one probe pod of ours publishing the same traffic at
//    the same per-pod rate, whose batches carry probe prompts; a poller calls
//    Match in a tight loop on its own connection until each probe is visible
//    (see lag_probe.h). Reports lag (batch ts -> visible in Match) p50/p99
//    with the polling resolution, and the rate the server applied meanwhile.
//  - ramp: one kvindex-sim per step at a rising offered rate (--ramp, blocks/s
//    or "max", optionally "/requests_per_batch"); blocks/s applied by the
//    server from its ListPods counters sampled every 100 ms (batches applied
//    x blocks per batch as the sim reports them), delivered fraction, gaps,
//    drops, drain time and CPU of both processes. The highest step the server
//    kept up with (everything delivered, nothing dropped, applied >= 95% of
//    offered, drained within 1 s) is the max sustainable ingestion.
//
//   kvindex-ingest-bench                      # spawns kvindex-server, lag then ramp
//   kvindex-ingest-bench --mode=ramp --ramp=500k,1M,2M,max --step_duration=10s --json

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kvindex_client.h"
#include "core/util/resident_memory.h"
#include "nlohmann/json.hpp"
#include "server/flags_help.h"
#include "spdlog/spdlog.h"
#include "tools/bench/child_process.h"
#include "tools/bench/lag_probe.h"
#include "tools/bench/latency_summary.h"
#include "tools/bench/local_stack.h"
#include "tools/bench/server_lag_histogram.h"
#include "tools/bench/target.h"

ABSL_FLAG(std::string, mode, "all", "all (lag, then ramp), lag or ramp.");
ABSL_FLAG(std::string, bin_dir, "", "Where kvindex-server and kvindex-sim are; empty: next to this binary.");
ABSL_FLAG(std::string, server_args, "", "Extra kvindex-server flags when it is spawned (no --server).");
ABSL_FLAG(std::string, sim_args, "", "Extra kvindex-sim flags for every simulator started.");
ABSL_FLAG(uint32_t, pods, 8, "Simulated pods (kvindex-sim engines) per measurement.");
ABSL_FLAG(uint32_t, block_size, 16, "Tokens per block.");
ABSL_FLAG(uint32_t, turn_tokens, 4096, "Mean prompt tokens; every prompt is new (no shared prefixes), ~t/16 blocks.");
ABSL_FLAG(uint64_t, capacity_blocks, 65536, "GPU blocks per engine (evictions beyond, as BlockRemoved events).");
ABSL_FLAG(std::string, model, "sim-model", "Model of the simulated pods.");
ABSL_FLAG(double, lag_rate, 100000, "Lag: total blocks/s published (sim pods plus the probe pod).");
ABSL_FLAG(absl::Duration, lag_duration, absl::Seconds(20), "Lag: probing time.");
ABSL_FLAG(absl::Duration, lag_warmup, absl::Seconds(2), "Lag: traffic before probing starts.");
ABSL_FLAG(bool, lag_fill, true,
          "Lag: after --lag_warmup, wait (up to --lag_fill_timeout) until the index holds 95 % of every engine's "
          "full cache (--capacity_blocks), so that the window sees the steady state, not tables still growing.");
ABSL_FLAG(absl::Duration, lag_fill_timeout, absl::Minutes(2), "Lag: longest wait of --lag_fill.");
ABSL_FLAG(uint64_t, lag_requests_per_batch, 1, "Lag: prompts per batch (message).");
ABSL_FLAG(uint32_t, idle_pods, 0,
          "Lag: pods without an engine (their port refuses connections) followed beside the active ones, "
          "as in a large cluster (issue 16: 1,000 active among 10,000); the spawned server needs "
          "--server_args=--max_workers=N above pods + idle_pods + 1.");
ABSL_FLAG(uint32_t, probe_blocks, 4, "Lag: fresh blocks in each probe prompt.");
ABSL_FLAG(absl::Duration, probe_lead, absl::Milliseconds(2),
          "Lag: the poller starts its tight Match loop this long before each probe batch is published.");
ABSL_FLAG(absl::Duration, poll_interval, absl::ZeroDuration(),
          "Lag: least time between two polls' sends; 0: a tight Match loop (best resolution, most CPU).");
ABSL_FLAG(std::string, ramp, "100k,300k,1M,2M,max",
          "Ramp steps: offered blocks/s (k/M suffixes) or max, each optionally /REQUESTS_PER_BATCH (e.g. max/16).");
ABSL_FLAG(uint64_t, requests_per_batch, 4, "Ramp: prompts per batch unless a step says.");
ABSL_FLAG(absl::Duration, step_duration, absl::Seconds(8), "Ramp: traffic time per step.");
ABSL_FLAG(absl::Duration, step_warmup, absl::Seconds(2), "Ramp: time excluded from the start of each step's window.");
ABSL_FLAG(absl::Duration, max_drain, absl::Seconds(30),
          "Ramp: longest wait for the server to drain its backlog after a step's traffic (then: not sustained).");
ABSL_FLAG(uint32_t, sim_threads, 1, "kvindex-sim --threads.");
ABSL_FLAG(bool, json, false, "Print the report as JSON instead of tables.");
ABSL_FLAG(std::string, json_file, "", "Also write the JSON report here.");
ABSL_FLAG(std::string, log_level, "warn", "spdlog level.");

namespace kvindex::bench {
namespace {

struct Counters {
  absl::Time time;
  uint64_t batches = 0, events = 0, gaps = 0, replays_ok = 0, replays_failed = 0, uncovered_gaps = 0, dropped = 0,
           duplicates = 0, restarts = 0, decode_errors = 0, blocks_held = 0;
  size_t workers = 0;
};

// Sums the ListPods counters of the pods in `keys`.
absl::StatusOr<Counters> Sample(client::KvIndexClient& client, const absl::flat_hash_set<std::string>& keys) {
  absl::StatusOr<v1::ListPodsResponse> pods = client.ListPods();
  if (!pods.ok()) return pods.status();
  Counters c;
  c.time = absl::Now();
  for (const v1::PodInfo& pod : pods->pods()) {
    if (!keys.contains(pod.key())) continue;
    for (const v1::WorkerInfo& w : pod.workers()) {
      ++c.workers;
      c.batches += w.batches();
      c.events += w.events();
      c.gaps += w.gaps();
      c.replays_ok += w.replays_ok();
      c.replays_failed += w.replays_failed();
      c.uncovered_gaps += w.uncovered_gaps();
      c.dropped += w.dropped();
      c.duplicates += w.duplicates();
      c.restarts += w.restarts();
      c.decode_errors += w.decode_errors();
      c.blocks_held += w.blocks();
    }
  }
  return c;
}

absl::StatusOr<double> ParseRate(absl::string_view text) {
  std::string t = absl::AsciiStrToLower(text);
  if (t == "max") return 0.0;
  double scale = 1;
  if (!t.empty() && (t.back() == 'k' || t.back() == 'm')) {
    scale = t.back() == 'k' ? 1e3 : 1e6;
    t.pop_back();
  }
  double v = 0;
  if (!absl::SimpleAtod(t, &v) || !(v > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("bad rate \"", std::string(text), "\" (e.g. 100k, 1.5M, max)"));
  }
  return v * scale;
}

struct Step {
  std::string label;
  double blocks_per_second = 0;  // 0: as fast as the simulator goes
  uint64_t requests_per_batch = 1;
};

absl::StatusOr<std::vector<Step>> ParseRamp(const std::string& text, uint64_t default_rpb) {
  std::vector<Step> steps;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<std::string> f = absl::StrSplit(part, '/');
    Step s;
    s.label = std::string(part);
    absl::StatusOr<double> rate = ParseRate(f[0]);
    if (!rate.ok()) return rate.status();
    s.blocks_per_second = *rate;
    s.requests_per_batch = default_rpb;
    if (f.size() > 2 || (f.size() == 2 && (!absl::SimpleAtoi(f[1], &s.requests_per_batch) || s.requests_per_batch == 0))) {
      return absl::InvalidArgumentError(absl::StrCat("bad ramp step \"", std::string(part), "\" (RATE[/PROMPTS_PER_BATCH])"));
    }
    steps.push_back(s);
  }
  if (steps.empty()) return absl::InvalidArgumentError("empty --ramp");
  return steps;
}

// The simulator flags shared by every measurement.
std::vector<std::string> SimArgs(const std::string& prefix, double requests_per_second_per_engine, uint64_t rpb,
                                 absl::Duration duration) {
  std::vector<std::string> args = {
      absl::StrCat("--pods=", absl::GetFlag(FLAGS_pods)),
      "--namespace=ingest",
      absl::StrCat("--name_prefix=", prefix),
      absl::StrCat("--model=", absl::GetFlag(FLAGS_model)),
      absl::StrCat("--block_size=", absl::GetFlag(FLAGS_block_size)),
      "--system_prompts=0",
      "--max_turns=1",
      absl::StrCat("--turn_tokens=", absl::GetFlag(FLAGS_turn_tokens)),
      absl::StrCat("--capacity_blocks=", absl::GetFlag(FLAGS_capacity_blocks)),
      absl::StrCat("--rate=", requests_per_second_per_engine),
      absl::StrCat("--requests_per_batch=", rpb),
      absl::StrCat("--duration=", absl::FormatDuration(duration)),
      absl::StrCat("--threads=", absl::GetFlag(FLAGS_sim_threads)),
      "--keep_running",
      "--stats_interval=0",
      "--truth_interval=0",
  };
  for (std::string& a : SplitArgs(absl::GetFlag(FLAGS_sim_args))) args.push_back(std::move(a));
  return args;
}

// The JSON summary line kvindex-sim prints at exit.
nlohmann::json SimSummary(ChildProcess& sim) {
  sim.Stop(absl::Seconds(10));
  const std::string out = sim.Stdout();
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipWhitespace())) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("blocks_stored")) return j;
  }
  return nlohmann::json::object();
}

absl::flat_hash_set<std::string> KeysOf(const v1::PodSnapshot& snapshot) {
  absl::flat_hash_set<std::string> keys;
  for (const v1::Pod& p : snapshot.pods()) keys.insert(absl::StrCat(p.namespace_(), "/", p.name()));
  return keys;
}

struct Env {
  std::string bin_dir;
  std::string dir;
  Target target;
  client::KvIndexClient* client = nullptr;
  pid_t server_pid = 0;
  std::string metrics_address;  // the spawned server's /metrics; empty: not known
};

double Cpu(pid_t pid) { return pid > 0 ? std::max(ProcessCpuSeconds(pid), 0.0) : 0; }

// A TCP port on 127.0.0.1 bound but never listening, for the whole run:
// connecting to it is refused (the idle pods' engines).
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~RefusingPort() {
    if (fd_ >= 0) close(fd_);
  }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  uint32_t port() const { return port_; }  // 0: none could be bound

 private:
  int fd_ = -1;
  uint32_t port_ = 0;
};

absl::StatusOr<nlohmann::json> RunLag(const Env& env) {
  const uint32_t pods = absl::GetFlag(FLAGS_pods);
  const double bpr = MeanBlocksPerRequest(absl::GetFlag(FLAGS_turn_tokens), absl::GetFlag(FLAGS_block_size));
  const double per_engine = absl::GetFlag(FLAGS_lag_rate) / (static_cast<double>(pods + 1) * bpr);
  const uint64_t rpb = std::max<uint64_t>(absl::GetFlag(FLAGS_lag_requests_per_batch), 1);
  const absl::Duration warmup = absl::GetFlag(FLAGS_lag_warmup);
  const absl::Duration duration = absl::GetFlag(FLAGS_lag_duration);

  LagProbeOptions o;
  o.model = absl::GetFlag(FLAGS_model);
  o.workload.seed = 77;
  o.workload.stream = 1000;
  o.workload.system_prompts = 0;
  o.workload.max_turns = 1;
  o.workload.turn_tokens = absl::GetFlag(FLAGS_turn_tokens);
  o.cache.block_size = absl::GetFlag(FLAGS_block_size);
  o.cache.gpu_capacity_blocks = absl::GetFlag(FLAGS_capacity_blocks);
  o.cache.salt = 0x9807E;
  o.cache.model = o.model;
  o.rate = per_engine;
  o.requests_per_batch = rpb;
  o.probe_blocks = std::max<uint32_t>(absl::GetFlag(FLAGS_probe_blocks), 1);
  o.probe_lead = absl::GetFlag(FLAGS_probe_lead);
  o.poll_interval = absl::GetFlag(FLAGS_poll_interval);
  o.token = env.target.token;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(env.target, 1000);
  if (!channel.ok()) return channel.status();
  absl::StatusOr<std::unique_ptr<LagProbe>> probe = LagProbe::Create(o, *channel);
  if (!probe.ok()) return probe.status();

  absl::StatusOr<SimChild> sim = StartSim(env.bin_dir, env.dir, "lag-sim",
                                          SimArgs("lag-", per_engine, rpb, warmup + duration + absl::Seconds(30)),
                                          /*prompts=*/false);
  if (!sim.ok()) return sim.status();
  absl::StatusOr<v1::PodSnapshot> snapshot = ReadPodSnapshot(sim->pods_file);
  if (!snapshot.ok()) return snapshot.status();
  *snapshot->add_pods() = (*probe)->pod();
  const absl::flat_hash_set<std::string> keys = KeysOf(*snapshot);
  const uint32_t idle_pods = absl::GetFlag(FLAGS_idle_pods);
  RefusingPort refusing;
  if (idle_pods > 0 && refusing.port() == 0) return absl::UnavailableError("no port to refuse connections on");
  for (uint32_t i = 0; i < idle_pods; ++i) {
    v1::Pod* idle = snapshot->add_pods();
    *idle = snapshot->pods(0);
    idle->set_namespace_("idle");
    idle->set_name(absl::StrCat("idle-", i));
    idle->set_events_port(refusing.port());
    idle->clear_replay_port();
  }
  const uint64_t rss_before = env.server_pid > 0 ? ResidentBytes(env.server_pid) : 0;
  (*probe)->Start();
  const absl::Time subscribe_start = absl::Now();
  if (absl::Status s = ApplySnapshot(*env.client, *snapshot); !s.ok()) return s;
  const double subscribe_seconds = absl::ToDoubleSeconds(absl::Now() - subscribe_start);
  if (absl::Status s = WaitForWorkersLive(*env.client, std::vector<std::string>(keys.begin(), keys.end()),
                                          absl::Seconds(30));
      !s.ok()) {
    return s;
  }
  absl::SleepFor(warmup);
  // Until the engines' caches are full the index grows, and each growth of a
  // table stops its worker's ingestion for its rehash (milliseconds for large
  // ones): a transient measured apart (--nolag_fill), not the steady state.
  const absl::Time fill_start = absl::Now();
  std::optional<bool> filled;
  if (absl::GetFlag(FLAGS_lag_fill)) {
    const double full = 0.95 * static_cast<double>(pods + 1) * absl::GetFlag(FLAGS_capacity_blocks);
    filled = false;
    while (absl::Now() - fill_start < absl::GetFlag(FLAGS_lag_fill_timeout)) {
      absl::StatusOr<Counters> c = Sample(*env.client, keys);
      if (!c.ok()) return c.status();
      if (static_cast<double>(c->blocks_held) >= full) {
        filled = true;
        break;
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
  }
  const double fill_seconds = absl::ToDoubleSeconds(absl::Now() - fill_start);
  // The server's own lag histogram around the probing window (when we know where it is).
  std::optional<LagHistogram> h0;
  if (!env.metrics_address.empty()) {
    absl::StatusOr<LagHistogram> h = ScrapeLagHistogram(env.metrics_address);
    if (!h.ok()) return h.status();
    h0 = *std::move(h);
  }
  absl::StatusOr<Counters> c0 = Sample(*env.client, keys);
  const double server_cpu0 = Cpu(env.server_pid), sim_cpu0 = sim->process->CpuSeconds();
  const double self_cpu0 = SelfCpuSeconds();
  (*probe)->StartProbing();
  absl::SleepFor(duration);
  (*probe)->StopProbing();
  std::optional<LagHistogramSummary> server_lag;
  if (h0.has_value()) {
    absl::StatusOr<LagHistogram> h1 = ScrapeLagHistogram(env.metrics_address);
    if (!h1.ok()) return h1.status();
    server_lag = SummarizeBetween(*h0, *h1);
  }
  absl::StatusOr<Counters> c1 = Sample(*env.client, keys);
  const double server_cpu1 = Cpu(env.server_pid), sim_cpu1 = sim->process->CpuSeconds();
  const double self_cpu1 = SelfCpuSeconds();
  (*probe)->Stop();
  const nlohmann::json summary = SimSummary(*sim->process);
  if (!c0.ok()) return c0.status();
  if (!c1.ok()) return c1.status();
  LagResult r = (*probe)->result();

  const double secs = absl::ToDoubleSeconds(c1->time - c0->time);
  const double sim_bpb = summary.value("batches", 0.0) > 0
                             ? summary.value("blocks_stored", 0.0) / summary.value("batches", 1.0)
                             : bpr * static_cast<double>(rpb);
  const double applied = secs > 0 ? static_cast<double>(c1->batches - c0->batches) / secs * sim_bpb : 0;
  nlohmann::json j;
  j["config"] = {{"target_blocks_per_second", absl::GetFlag(FLAGS_lag_rate)},
                 {"sim_pods", pods},
                 {"idle_pods", idle_pods},
                 {"probe_pods", 1},
                 {"requests_per_second_per_pod", per_engine},
                 {"requests_per_batch", rpb},
                 {"mean_blocks_per_request", bpr},
                 {"probe_blocks", o.probe_blocks},
                 {"probe_lead_ms", absl::ToDoubleMilliseconds(o.probe_lead)},
                 {"poll_interval_us", absl::ToDoubleMicroseconds(o.poll_interval)},
                 {"duration_s", absl::ToDoubleSeconds(duration)},
                 {"warmup_s", absl::ToDoubleSeconds(warmup)},
                 {"fill", filled.has_value()}};
  if (filled.has_value()) {
    j["index_filled"] = *filled;  // false: the fill timed out, the window may include growth
    j["fill_seconds"] = fill_seconds;
  }
  j["blocks_held"] = c0->blocks_held;
  j["subscribe_seconds"] = subscribe_seconds;  // the SyncPods snapshot of every pod, acked
  if (env.server_pid > 0) {
    const uint64_t rss = ResidentBytes(env.server_pid);
    j["server_rss_mib"] = static_cast<double>(rss) / (1 << 20);
    j["server_rss_growth_mib"] = (static_cast<double>(rss) - static_cast<double>(rss_before)) / (1 << 20);
  }
  j["probes"] = r.probes;
  j["visible"] = r.lag_upper_ns.size();
  j["lost"] = r.lost;
  j["lag_upper"] = ToJson(Summarize(r.lag_upper_ns));
  j["lag_lower"] = ToJson(Summarize(r.lag_lower_ns));
  j["poll_rtt"] = ToJson(Summarize(r.poll_rtt_ns));
  if (server_lag.has_value()) {
    j["server_lag"] = {{"batches", server_lag->batches},
                       {"p50_ms", server_lag->p50_ms},
                       {"p90_ms", server_lag->p90_ms},
                       {"p99_ms", server_lag->p99_ms},
                       {"within_1ms", server_lag->within_1ms}};
  }
  j["polls"] = r.polls;
  j["poll_errors"] = r.poll_errors;
  j["applied_blocks_per_second"] = applied;
  j["applied_batches_per_second"] = secs > 0 ? static_cast<double>(c1->batches - c0->batches) / secs : 0;
  j["sim_blocks_per_second"] = summary.value("blocks_stored_per_second", 0.0);
  j["blocks_per_batch"] = sim_bpb;
  j["gaps"] = c1->gaps - c0->gaps;
  j["uncovered_gaps"] = c1->uncovered_gaps - c0->uncovered_gaps;
  j["dropped"] = c1->dropped - c0->dropped;
  j["server_cpu_cores"] = secs > 0 && env.server_pid > 0 ? (server_cpu1 - server_cpu0) / secs : -1;
  j["sim_cpu_cores"] = secs > 0 ? (sim_cpu1 - sim_cpu0) / secs : -1;
  j["bench_cpu_cores"] = secs > 0 ? (self_cpu1 - self_cpu0) / secs : -1;  // probe pod and poller
  j["target_lag_p99_ms"] = 1.0;
  return j;
}

absl::StatusOr<nlohmann::json> RunStep(const Env& env, const Step& step, size_t index) {
  const uint32_t pods = absl::GetFlag(FLAGS_pods);
  const double bpr = MeanBlocksPerRequest(absl::GetFlag(FLAGS_turn_tokens), absl::GetFlag(FLAGS_block_size));
  const double per_engine = step.blocks_per_second / (static_cast<double>(pods) * bpr);
  const absl::Duration duration = absl::GetFlag(FLAGS_step_duration);
  const absl::Duration warmup = absl::GetFlag(FLAGS_step_warmup);
  const std::string name = absl::StrCat("ramp", index);
  const absl::Time spawned = absl::Now();
  absl::StatusOr<SimChild> sim =
      StartSim(env.bin_dir, env.dir, name, SimArgs(name + "-", per_engine, step.requests_per_batch, duration), false);
  if (!sim.ok()) return sim.status();
  absl::StatusOr<v1::PodSnapshot> snapshot = ReadPodSnapshot(sim->pods_file);
  if (!snapshot.ok()) return snapshot.status();
  const absl::flat_hash_set<std::string> keys = KeysOf(*snapshot);
  if (absl::Status s = ApplySnapshot(*env.client, *snapshot); !s.ok()) return s;

  struct Point {
    Counters c;
    double server_cpu, sim_cpu;
    bool changed;  // batches differ from the previous sample: a fresh value
  };
  std::vector<Point> points;
  std::optional<absl::Time> traffic_end;
  absl::Time last_change = absl::Now();
  const absl::Time hard_stop = spawned + duration + absl::GetFlag(FLAGS_max_drain);
  while (absl::Now() < hard_stop) {
    absl::StatusOr<Counters> c = Sample(*env.client, keys);
    if (!c.ok()) return c.status();
    const bool changed = points.empty() || c->batches != points.back().c.batches;
    if (changed) last_change = c->time;
    points.push_back({*c, Cpu(env.server_pid), sim->process->CpuSeconds(), changed});
    spdlog::debug("{} t={:.3f}s batches={} events={} workers={} server_cpu={:.2f} sim_cpu={:.2f}", name,
                  absl::ToDoubleSeconds(c->time - spawned), c->batches, c->events, c->workers,
                  points.back().server_cpu, points.back().sim_cpu);
    if (!traffic_end.has_value() && sim->process->Log().find("traffic done") != std::string::npos) {
      traffic_end = c->time;
    }
    if (sim->process->Wait(absl::ZeroDuration()).has_value()) {
      return absl::InternalError(absl::StrCat("kvindex-sim exited early; its log:\n", sim->process->Log()));
    }
    // Drained: traffic over, nothing applied for 2 s and (when we know) the server idle for the last second.
    if (traffic_end.has_value() && c->time - last_change >= absl::Seconds(2)) {
      bool idle = true;
      if (env.server_pid > 0 && points.size() > 10) {
        const Point& ago = points[points.size() - 11];
        idle = (points.back().server_cpu - ago.server_cpu) / absl::ToDoubleSeconds(c->time - ago.c.time) < 0.05;
      }
      if (idle) break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (!traffic_end.has_value()) traffic_end = points.back().c.time;
  const bool drained = absl::Now() < hard_stop;
  const nlohmann::json summary = SimSummary(*sim->process);
  const double sim_batches = summary.value("batches", 0.0);
  const double sim_blocks = summary.value("blocks_stored", 0.0);
  const double bpb = sim_batches > 0 ? sim_blocks / sim_batches : 0;

  // The server publishes its counters once per poll turn (up to 256 messages
  // per socket), so under a backlog they move in jumps. Only samples where
  // the counter just changed are fresh: the applied rate is taken between the
  // first fresh sample after the warmup and the last one (the backlog's end).
  const Point* first = nullptr;
  const Point* last = nullptr;
  for (const Point& p : points) {
    if (!p.changed || p.c.time < spawned + warmup) continue;
    if (first == nullptr) first = &p;
    last = &p;
  }
  double window = 0, applied = 0, server_cores = -1, sim_cores = -1;
  if (first != nullptr && last != first) {
    window = absl::ToDoubleSeconds(last->c.time - first->c.time);
    applied = static_cast<double>(last->c.batches - first->c.batches) / window * bpb;
    if (env.server_pid > 0) server_cores = (last->server_cpu - first->server_cpu) / window;
    // The simulator's share while its traffic ran.
    const Point* traffic_last = first;
    for (const Point& p : points) {
      if (p.c.time >= first->c.time && p.c.time <= *traffic_end) traffic_last = &p;
    }
    const double sim_span = absl::ToDoubleSeconds(traffic_last->c.time - first->c.time);
    if (sim_span > 0) sim_cores = (traffic_last->sim_cpu - first->sim_cpu) / sim_span;
  }
  spdlog::debug("{}: traffic end {:.3f}s, window {:.3f}s ({} -> {} batches), {:.1f} blocks/batch", name,
                absl::ToDoubleSeconds(*traffic_end - spawned), window, first ? first->c.batches : 0,
                last ? last->c.batches : 0, bpb);
  const Counters& end = points.back().c;
  const double offered = summary.value("blocks_stored_per_second", 0.0);
  const double delivered = sim_batches > 0 ? static_cast<double>(end.batches) / sim_batches : 0;
  const double drain = std::max(0.0, absl::ToDoubleSeconds(last_change - *traffic_end));
  const bool sustained = drained && delivered >= 0.999 && end.uncovered_gaps == 0 && end.dropped == 0 &&
                         applied >= 0.95 * offered && drain <= 1.0;
  nlohmann::json j = {{"step", step.label},
                      {"target_blocks_per_second", step.blocks_per_second},
                      {"requests_per_batch", step.requests_per_batch},
                      {"requests_per_second_per_pod", per_engine},
                      {"pods", pods},
                      {"offered_blocks_per_second", offered},
                      {"applied_blocks_per_second", applied},
                      {"applied_batches_per_second", window > 0 ? applied / std::max(bpb, 1e-9) : 0},
                      {"window_s", window},
                      {"blocks_per_batch", bpb},
                      {"sim_batches", sim_batches},
                      {"server_batches", end.batches},
                      {"delivered", delivered},
                      {"drain_s", drain},
                      {"drained", drained},
                      {"gaps", end.gaps},
                      {"replays_ok", end.replays_ok},
                      {"replays_failed", end.replays_failed},
                      {"uncovered_gaps", end.uncovered_gaps},
                      {"dropped", end.dropped},
                      {"restarts", end.restarts},
                      {"decode_errors", end.decode_errors},
                      {"server_cpu_cores", server_cores},
                      {"sim_cpu_cores", sim_cores},
                      {"sustained", sustained}};
  return j;
}

int Main() {
  spdlog::set_level(spdlog::level::from_str(absl::GetFlag(FLAGS_log_level)));
  const MachineInfo machine_start = ReadMachineInfo();
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "all" && mode != "lag" && mode != "ramp") {
    std::cerr << "kvindex-ingest-bench: --mode must be all, lag or ramp\n";
    return 2;
  }
  // A ramp step measures from --step_warmup to --step_duration: no window, no number.
  if (absl::GetFlag(FLAGS_step_duration) <= absl::GetFlag(FLAGS_step_warmup)) {
    std::cerr << "kvindex-ingest-bench: --step_duration=" << absl::FormatDuration(absl::GetFlag(FLAGS_step_duration))
              << " must be longer than --step_warmup=" << absl::FormatDuration(absl::GetFlag(FLAGS_step_warmup))
              << " (each step is measured after its warm-up)\n";
    return 2;
  }
  absl::StatusOr<std::vector<Step>> steps =
      ParseRamp(absl::GetFlag(FLAGS_ramp), std::max<uint64_t>(absl::GetFlag(FLAGS_requests_per_batch), 1));
  if (!steps.ok()) {
    std::cerr << "kvindex-ingest-bench: " << steps.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<Target> target = TargetFromFlags();
  if (!target.ok()) {
    std::cerr << "kvindex-ingest-bench: " << target.status() << "\n";
    return 2;
  }
  Env env;
  env.bin_dir = absl::GetFlag(FLAGS_bin_dir).empty() ? SelfBinDir() : absl::GetFlag(FLAGS_bin_dir);
  absl::StatusOr<std::string> dir = MakeTempDir("kvindex-ingest-bench");
  if (!dir.ok()) {
    std::cerr << "kvindex-ingest-bench: " << dir.status() << "\n";
    return 1;
  }
  env.dir = *dir;
  std::optional<ServerChild> server;
  if (target->server.empty()) {
    absl::StatusOr<ServerChild> s = StartServer(env.bin_dir, SplitArgs(absl::GetFlag(FLAGS_server_args)));
    if (!s.ok()) {
      std::cerr << "kvindex-ingest-bench: " << s.status() << "\n";
      return 1;
    }
    server = *std::move(s);
    target->server = server->address;
    env.server_pid = server->process->pid();
    env.metrics_address = server->metrics_address;
  }
  env.target = *target;
  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client =
      client::KvIndexClient::Create(ToClientOptions(*target));
  if (!client.ok()) {
    std::cerr << "kvindex-ingest-bench: " << client.status() << "\n";
    return 2;
  }
  env.client = client->get();

  nlohmann::json report;
  report["tool"] = "kvindex-ingest-bench";
  report["time"] = absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
  report["server"] = target->server;
  report["spawned"] = server.has_value();
  report["machine"] = ToJson(machine_start);
  report["config"] = {{"pods", absl::GetFlag(FLAGS_pods)},
                      {"block_size", absl::GetFlag(FLAGS_block_size)},
                      {"turn_tokens", absl::GetFlag(FLAGS_turn_tokens)},
                      {"mean_blocks_per_request",
                       MeanBlocksPerRequest(absl::GetFlag(FLAGS_turn_tokens), absl::GetFlag(FLAGS_block_size))},
                      {"capacity_blocks", absl::GetFlag(FLAGS_capacity_blocks)},
                      {"sim_threads", absl::GetFlag(FLAGS_sim_threads)},
                      {"server_args", absl::GetFlag(FLAGS_server_args)},
                      {"sim_args", absl::GetFlag(FLAGS_sim_args)}};
  int exit_code = 0;
  if (mode != "ramp") {
    spdlog::info("lag: {} blocks/s", absl::GetFlag(FLAGS_lag_rate));
    absl::StatusOr<nlohmann::json> lag = RunLag(env);
    if (!lag.ok()) {
      std::cerr << "kvindex-ingest-bench: lag: " << lag.status() << "\n";
      exit_code = 1;
    } else {
      report["lag"] = *std::move(lag);
    }
  }
  if (mode != "lag" && exit_code == 0) {
    nlohmann::json ramp = nlohmann::json::array();
    double best = 0, peak = 0;
    for (size_t i = 0; i < steps->size(); ++i) {
      spdlog::info("ramp step {}", (*steps)[i].label);
      absl::StatusOr<nlohmann::json> step = RunStep(env, (*steps)[i], i);
      if (!step.ok()) {
        std::cerr << "kvindex-ingest-bench: ramp step " << (*steps)[i].label << ": " << step.status() << "\n";
        exit_code = 1;
        break;
      }
      const double applied = (*step)["applied_blocks_per_second"].get<double>();
      peak = std::max(peak, applied);
      if ((*step)["sustained"].get<bool>()) best = std::max(best, applied);
      ramp.push_back(*std::move(step));
    }
    report["ramp"] = {{"steps", ramp},
                      {"max_sustained_blocks_per_second", best},
                      {"peak_applied_blocks_per_second", peak},
                      {"target_blocks_per_second", 1e6}};
  }
  if (server.has_value()) {
    report["server_memory"] = nullptr;
    if (absl::StatusOr<v1::GetStatsResponse> stats = env.client->GetStats(); stats.ok()) {
      report["server_memory"] = {{"index_memory_bytes", stats->memory_bytes()}, {"entries", stats->entries()}};
    }
    server->process->Stop();
  }
  const MachineInfo machine_end = ReadMachineInfo();
  report["machine"]["loadavg_end"] = {machine_end.loadavg[0], machine_end.loadavg[1], machine_end.loadavg[2]};
  RemoveTree(env.dir);

  if (const std::string path = absl::GetFlag(FLAGS_json_file); !path.empty()) {
    std::ofstream(path) << report.dump(2) << "\n";
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << report.dump(2) << std::endl;
    return exit_code;
  }
  std::cout << absl::StrFormat("kvindex-ingest-bench: server %s%s; %u sim pods, %u-token blocks, ~%.0f blocks/prompt\n",
                               target->server, server.has_value() ? " (spawned)" : "", absl::GetFlag(FLAGS_pods),
                               absl::GetFlag(FLAGS_block_size),
                               report["config"]["mean_blocks_per_request"].get<double>());
  std::cout << absl::StrFormat("machine: %u x %s; load average %s at start, %s at end\n", machine_start.nproc,
                               machine_start.cpu_model, LoadAverageText(machine_start), LoadAverageText(machine_end));
  if (report.contains("lag")) {
    const nlohmann::json& l = report["lag"];
    const auto ms = [](const nlohmann::json& s, const char* k) { return s[k].get<double>() / 1e3; };
    std::cout << absl::StrFormat(
        "\nlag (batch ts -> visible in Match) at %.0f blocks/s applied (target %.0f; %u sim pods + 1 probe pod):\n",
        l["applied_blocks_per_second"].get<double>(), absl::GetFlag(FLAGS_lag_rate), absl::GetFlag(FLAGS_pods));
    std::cout << absl::StrFormat("  %d probes, %d visible, %d lost; index at %d blocks held (%s)\n",
                                 l["probes"].get<uint64_t>(), l["visible"].get<uint64_t>(),
                                 l["lost"].get<uint64_t>(), l["blocks_held"].get<uint64_t>(),
                                 !l.contains("index_filled") ? "still growing: --nolag_fill"
                                 : l["index_filled"].get<bool>()
                                     ? absl::StrFormat("engines' caches full after %.1f s more", l["fill_seconds"].get<double>())
                                     : "fill timed out: may include growth");
    std::cout << absl::StrFormat("  lag <= first seeing reply:   p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms"
                                 "  (target p99 <= 1 ms)\n",
                                 ms(l["lag_upper"], "p50_us"), ms(l["lag_upper"], "p90_us"),
                                 ms(l["lag_upper"], "p99_us"), ms(l["lag_upper"], "max_us"));
    std::cout << absl::StrFormat("  lag >= last missing send:    p50 %.3f ms  p90 %.3f ms  p99 %.3f ms\n",
                                 ms(l["lag_lower"], "p50_us"), ms(l["lag_lower"], "p90_us"),
                                 ms(l["lag_lower"], "p99_us"));
    if (l.contains("server_lag")) {
      const nlohmann::json& s = l["server_lag"];
      std::cout << absl::StrFormat(
          "  at the server (ts -> applied, all %d batches, kvindex_event_lag_seconds): p50 %.3f ms  p90 %.3f ms  "
          "p99 %.3f ms; %.2f %% <= 1 ms\n",
          s["batches"].get<uint64_t>(), s["p50_ms"].get<double>(), s["p90_ms"].get<double>(),
          s["p99_ms"].get<double>(), 100 * s["within_1ms"].get<double>());
    }
    std::cout << absl::StrFormat("  poll resolution (Match round trip): p50 %.0f us  p99 %.0f us, %d polls\n",
                                 l["poll_rtt"]["p50_us"].get<double>(), l["poll_rtt"]["p99_us"].get<double>(),
                                 l["polls"].get<uint64_t>());
    std::cout << absl::StrFormat("  CPU: server %.2f cores, sim %.2f, probe+poller %.2f; gaps %d, dropped %d\n",
                                 l["server_cpu_cores"].get<double>(), l["sim_cpu_cores"].get<double>(),
                                 l["bench_cpu_cores"].get<double>(), l["gaps"].get<uint64_t>(),
                                 l["dropped"].get<uint64_t>());
  }
  if (report.contains("ramp")) {
    std::cout << absl::StrFormat("\n%-12s %12s %12s %9s %8s %7s %6s %6s %8s %8s %5s\n", "step", "offered/s",
                                 "applied/s", "blocks/b", "deliv", "drain", "gaps", "drops", "srv cpu", "sim cpu",
                                 "ok");
    for (const nlohmann::json& s : report["ramp"]["steps"]) {
      std::cout << absl::StrFormat(
          "%-12s %12.0f %12.0f %9.0f %7.1f%% %6.1fs %6d %6d %8.2f %8.2f %5s\n", s["step"].get<std::string>(),
          s["offered_blocks_per_second"].get<double>(), s["applied_blocks_per_second"].get<double>(),
          s["blocks_per_batch"].get<double>(), 100 * s["delivered"].get<double>(), s["drain_s"].get<double>(),
          s["gaps"].get<uint64_t>(), s["dropped"].get<uint64_t>(), s["server_cpu_cores"].get<double>(),
          s["sim_cpu_cores"].get<double>(), s["sustained"].get<bool>() ? "yes" : "no");
    }
    std::cout << absl::StrFormat("max sustained: %.0f blocks/s; peak applied: %.0f blocks/s (target >= 1000000)\n",
                                 report["ramp"]["max_sustained_blocks_per_second"].get<double>(),
                                 report["ramp"]["peak_applied_blocks_per_second"].get<double>());
  }
  return exit_code;
}

}  // namespace
}  // namespace kvindex::bench

int main(int argc, char** argv) {
  // absl's --help exits 1 and matches flags to the binary's name (none here).
  constexpr absl::string_view kUsage =
      "end-to-end ingestion benchmark: kvindex-sim -> ZeroMQ -> kvindex-server on 127.0.0.1.\n"
      "  kvindex-ingest-bench [--mode=all|lag|ramp] [--lag_rate=100k] [--ramp=100k,1M,max] [--json]\n"
      "With --server it pushes its pods to that server, replacing the pods it follows.";
  if (kvindex::HelpRequested(argc, argv)) {
    std::cout << kvindex::FlagsHelp(absl::StrCat("kvindex-ingest-bench: ", kUsage), {__FILE__, kvindex::bench::TargetFlagsFile()});
    return 0;
  }
  absl::SetProgramUsageMessage(kUsage);
  absl::ParseCommandLine(argc, argv);
  return kvindex::bench::Main();
}
