// kvindex-bench: gRPC load generator for kvindex-server. Keeps --concurrency
// Match calls in flight for --duration and reports RPS and latency
// percentiles; in the same run it does the same with an empty RPC
// (grpc.health.v1.Health/Check), so Match throughput is also given as a ratio
// of the gRPC floor on this machine. Prompts come from kvindex-sim's
// --prompts_file, cut to the lengths of --prompt_mix, so that they hit the
// index. --spawn starts its own kvindex-sim and kvindex-server on 127.0.0.1.
// --rpc=route measures RecordRouting instead: the same prompts, each sent to
// every pod in turn (README "Routing hints").
//
//   kvindex-bench --spawn --prompt_mix=512:1,2048:2,8192:1 --concurrency=16 --duration=5s
//   kvindex-bench --server=host:50051 --prompts_file=prompts.json --prompt_tokens=2048 --json
//   kvindex-bench --spawn --rpc=route --prompt_tokens=2048 --route_ttl_ms=600000

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kvindex_client.h"
#include "core/index/block_hash.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/slice.h"
#include "kvindex/v1/kvindex.pb.h"
#include "nlohmann/json.hpp"
#include "server/flags_help.h"
#include "spdlog/spdlog.h"
#include "tools/bench/child_process.h"
#include "tools/bench/latency_summary.h"
#include "tools/bench/local_stack.h"
#include "tools/bench/prompt_mix.h"
#include "tools/bench/rpc_load.h"
#include "tools/bench/target.h"

ABSL_FLAG(size_t, concurrency, 16, "Calls in flight (closed loop).");
ABSL_FLAG(size_t, client_threads, 1, "Client threads, one CompletionQueue each.");
ABSL_FLAG(size_t, channels, 1, "gRPC channels (TCP connections) the calls are spread over.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "Measured time of each phase (health, Match) per round.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "Unrecorded time before each phase's measurement.");
ABSL_FLAG(int32_t, rounds, 1, "Rounds of (health phase, Match phase); alternating evens out a noisy machine.");
ABSL_FLAG(std::string, mode, "both", "both, match (the --rpc phase alone) or health.");
ABSL_FLAG(std::string, rpc, "match",
          "The kvindex RPC measured: match, or route (RecordRouting of the same prompts, each prompt to every pod of "
          "--route_pods in turn).");
ABSL_FLAG(std::string, route_pods, "",
          "Pods (NS/NAME, comma-separated) of --rpc=route; empty: every pod the server lists.");
ABSL_FLAG(uint32_t, route_ttl_ms, 0, "ttl_ms of --rpc=route; 0: the server's adaptive TTL.");
ABSL_FLAG(size_t, route_prompts, 0,
          "--rpc=route: this many new prompts (random tokens nobody holds, lengths of the mix), each routed to one pod "
          "in turn and sent round robin, so that calls write entries; 0: the Match prompts to every pod, which the "
          "sim's pods already hold (nothing is written).");
ABSL_FLAG(std::string, prompt_mix, "2048", "Prompt lengths in tokens with weights: \"512:1,2048:2,8192:1\".");
ABSL_FLAG(uint32_t, prompt_tokens, 0, "One prompt length (overrides --prompt_mix); 0: use the mix.");
ABSL_FLAG(size_t, prompts_per_length, 8, "Different prompts per length, sent in turn.");
ABSL_FLAG(std::string, prompts_file, "", "kvindex-sim --prompts_file to take prompts from (set by --spawn).");
ABSL_FLAG(std::string, request, "tokens",
          "Match by token_ids (tokens), or by block_hashes computed here with the index hash (hashes), as a "
          "gateway may.");
ABSL_FLAG(uint32_t, block_size, 0, "Block size of --request=hashes; 0: the model's, from a first Match by tokens.");
ABSL_FLAG(std::string, model, "", "Model of the Match calls; empty: the prompts file's, else sim-model.");
ABSL_FLAG(std::string, lora_name, "", "LoRA name of the Match calls.");
ABSL_FLAG(absl::Duration, wait_for_hits, absl::Seconds(20),
          "Before measuring, wait up to this long until every prompt matches a pod; 0: do not check.");
ABSL_FLAG(bool, json, false, "Print the report as JSON instead of tables.");
ABSL_FLAG(std::string, json_file, "", "Also write the JSON report here.");
ABSL_FLAG(bool, spawn, false, "Start kvindex-sim and kvindex-server (from --bin_dir) on 127.0.0.1 and stop them after.");
ABSL_FLAG(std::string, bin_dir, "", "Where kvindex-server and kvindex-sim are; empty: next to this binary.");
ABSL_FLAG(std::string, sim_args,
          "--pods=8 --system_prompts=4 --system_prompt_tokens=8192 --conversations=8 --turn_tokens=256 "
          "--capacity_blocks=16384 --rate=0 --requests=64 --keep_running --stats_interval=0",
          "kvindex-sim flags with --spawn (it then idles, serving replay: the index stays still).");
ABSL_FLAG(std::string, server_args, "", "Extra kvindex-server flags with --spawn.");
ABSL_FLAG(int32_t, server_pid, 0, "kvindex-server's pid, to report its CPU per call (set by --spawn).");
ABSL_FLAG(std::string, log_level, "warn", "spdlog level.");

namespace kvindex::bench {
namespace {

constexpr char kMatchMethod[] = "/kvindex.v1.KvIndex/Match";
constexpr char kRouteMethod[] = "/kvindex.v1.KvIndex/RecordRouting";
constexpr char kHealthMethod[] = "/grpc.health.v1.Health/Check";

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

double ServerCpu(pid_t pid) { return pid > 0 ? std::max(ProcessCpuSeconds(pid), 0.0) : 0; }

// Match responses seen by one client thread, per prompt class.
struct HitCounters {
  std::vector<uint64_t> responses, hits, pods, matched_tokens;
  explicit HitCounters(size_t classes)
      : responses(classes), hits(classes), pods(classes), matched_tokens(classes) {}
};

struct PhaseResult {
  LoadResult load;
  double server_cpu_seconds = 0;
};

struct Totals {
  double seconds = 0;
  uint64_t ok = 0, errors = 0;
  std::map<std::string, uint64_t> error_codes;
  std::vector<std::vector<int64_t>> latency_ns;
  double server_cpu = 0, client_cpu = 0;
  void Add(const PhaseResult& p) {
    seconds += p.load.seconds;
    ok += p.load.ok;
    errors += p.load.errors;
    for (const auto& [k, v] : p.load.error_codes) error_codes[k] += v;
    if (latency_ns.size() < p.load.latency_ns.size()) latency_ns.resize(p.load.latency_ns.size());
    for (size_t c = 0; c < p.load.latency_ns.size(); ++c) {
      latency_ns[c].insert(latency_ns[c].end(), p.load.latency_ns[c].begin(), p.load.latency_ns[c].end());
    }
    server_cpu += p.server_cpu_seconds;
    client_cpu += p.load.client_cpu_seconds;
  }
  double rps() const { return seconds > 0 ? static_cast<double>(ok) / seconds : 0; }
};

int Main() {
  spdlog::set_level(spdlog::level::from_str(absl::GetFlag(FLAGS_log_level)));
  const MachineInfo machine_start = ReadMachineInfo();
  absl::StatusOr<Target> target = TargetFromFlags();
  if (!target.ok()) {
    std::cerr << "kvindex-bench: " << target.status() << "\n";
    return 2;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "both" && mode != "match" && mode != "health") {
    std::cerr << "kvindex-bench: --mode must be both, match or health\n";
    return 2;
  }
  std::vector<MixEntry> mix;
  if (const uint32_t tokens = absl::GetFlag(FLAGS_prompt_tokens); tokens > 0) {
    mix.push_back({tokens, 1});
  } else {
    absl::StatusOr<std::vector<MixEntry>> parsed = ParsePromptMix(absl::GetFlag(FLAGS_prompt_mix));
    if (!parsed.ok()) {
      std::cerr << "kvindex-bench: --prompt_mix: " << parsed.status().message() << "\n";
      return 2;
    }
    mix = *std::move(parsed);
  }
  const std::string request_kind = absl::GetFlag(FLAGS_request);
  if (request_kind != "tokens" && request_kind != "hashes") {
    std::cerr << "kvindex-bench: --request must be tokens or hashes\n";
    return 2;
  }
  const std::string rpc = absl::GetFlag(FLAGS_rpc);
  if (rpc != "match" && rpc != "route") {
    std::cerr << "kvindex-bench: --rpc must be match or route\n";
    return 2;
  }
  const bool route = rpc == "route";
  // The measured phase's name in the report: its JSON key and table rows.
  const std::string phase_key = route ? "route" : "match";
  const std::string phase_rpc = route ? "RecordRouting" : "Match";
  const bool spawn = absl::GetFlag(FLAGS_spawn);
  if (!spawn && target->server.empty()) target->server = "localhost:50051";

  // --spawn: simulator first (the server reads its pods file), then the server.
  std::string prompts_file = absl::GetFlag(FLAGS_prompts_file);
  std::string work_dir;
  std::optional<SimChild> sim;
  std::optional<ServerChild> server;
  pid_t server_pid = absl::GetFlag(FLAGS_server_pid);
  if (spawn) {
    const std::string bin_dir = absl::GetFlag(FLAGS_bin_dir).empty() ? SelfBinDir() : absl::GetFlag(FLAGS_bin_dir);
    absl::StatusOr<std::string> dir = MakeTempDir("kvindex-bench");
    if (!dir.ok()) {
      std::cerr << "kvindex-bench: " << dir.status() << "\n";
      return 1;
    }
    work_dir = *dir;
    absl::StatusOr<SimChild> s = StartSim(bin_dir, work_dir, "sim", SplitArgs(absl::GetFlag(FLAGS_sim_args)), true);
    if (!s.ok()) {
      std::cerr << "kvindex-bench: " << s.status() << "\n";
      return 1;
    }
    sim = *std::move(s);
    std::vector<std::string> server_args = SplitArgs(absl::GetFlag(FLAGS_server_args));
    server_args.push_back("--pods_file=" + sim->pods_file);
    absl::StatusOr<ServerChild> srv = StartServer(bin_dir, server_args);
    if (!srv.ok()) {
      std::cerr << "kvindex-bench: " << srv.status() << "\n";
      return 1;
    }
    server = *std::move(srv);
    server_pid = server->process->pid();
    target->server = server->address;
    prompts_file = sim->prompts_file;
    if (!WaitForFile(prompts_file, absl::Seconds(30))) {
      std::cerr << "kvindex-bench: kvindex-sim wrote no prompts file; its log:\n" << sim->process->Log();
      return 1;
    }
  }

  // Prompts.
  SimPrompts sources;
  if (!prompts_file.empty()) {
    absl::StatusOr<SimPrompts> read = ReadSimPrompts(prompts_file);
    if (!read.ok()) {
      std::cerr << "kvindex-bench: " << read.status() << "\n";
      return 1;
    }
    sources = *std::move(read);
  } else if (mode != "health") {
    spdlog::warn("no --prompts_file: Match prompts are random tokens and will miss the index");
  }
  std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) model = sources.model.empty() ? "sim-model" : sources.model;
  const size_t per_length = std::max<size_t>(absl::GetFlag(FLAGS_prompts_per_length), 1);
  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> sync_client =
      client::KvIndexClient::Create(ToClientOptions(*target));
  if (!sync_client.ok()) {
    std::cerr << "kvindex-bench: " << sync_client.status() << "\n";
    return 2;
  }

  std::vector<std::vector<uint32_t>> prompts;
  std::vector<size_t> request_class;
  std::vector<uint32_t> class_tokens;
  for (size_t c = 0; c < mix.size(); ++c) {
    class_tokens.push_back(mix[c].tokens);
    for (auto& tokens : MakePrompts(sources.prompts, mix[c].tokens, per_length, /*seed=*/c + 1)) {
      prompts.push_back(std::move(tokens));
      request_class.push_back(c);
    }
  }
  const std::string lora_name = absl::GetFlag(FLAGS_lora_name);
  const auto by_tokens = [&](const std::vector<uint32_t>& tokens) {
    v1::MatchRequest r;
    r.set_model(model);
    r.set_lora_name(lora_name);
    r.mutable_token_ids()->Assign(tokens.begin(), tokens.end());
    return r;
  };
  uint32_t block_size = absl::GetFlag(FLAGS_block_size);
  if (request_kind == "hashes" && block_size == 0 && mode != "health") {
    // The model's block size, as the server reports it (retrying while it starts).
    const absl::Time deadline = absl::Now() + std::max(absl::GetFlag(FLAGS_wait_for_hits), absl::Seconds(1));
    while (block_size == 0) {
      absl::StatusOr<v1::MatchResponse> r = (*sync_client)->Match(by_tokens(prompts.front()));
      if (r.ok()) block_size = r->block_size();
      if (block_size == 0 && absl::Now() >= deadline) {
        std::cerr << "kvindex-bench: cannot learn the block size of model " << model << " ("
                  << (r.ok() ? "no pod serves it yet" : r.status().ToString()) << "); pass --block_size\n";
        return 1;
      }
      if (block_size == 0) absl::SleepFor(absl::Milliseconds(100));
    }
  }
  std::vector<v1::MatchRequest> requests;
  for (const auto& tokens : prompts) {
    if (request_kind == "tokens") {
      requests.push_back(by_tokens(tokens));
      continue;
    }
    v1::MatchRequest r;
    r.set_model(model);
    r.set_lora_name(lora_name);
    const std::vector<uint64_t> hashes =
        block_size == 0 ? std::vector<uint64_t>{}
                        : HashPrefix(ContextSeed(model, lora_name, block_size), tokens, block_size);
    r.mutable_block_hashes()->Assign(hashes.begin(), hashes.end());
    requests.push_back(std::move(r));
  }

  // Check (and wait) that the prompts hit the index.
  std::vector<uint32_t> initial_hits(mix.size());
  const absl::Duration wait = absl::GetFlag(FLAGS_wait_for_hits);
  if (mode != "health" && wait > absl::ZeroDuration()) {
    const absl::Time deadline = absl::Now() + wait;
    while (true) {
      std::fill(initial_hits.begin(), initial_hits.end(), 0);
      size_t missing = 0;
      absl::Status error;
      for (size_t i = 0; i < requests.size(); ++i) {
        absl::StatusOr<v1::MatchResponse> r = (*sync_client)->Match(requests[i]);
        if (!r.ok()) {
          error = r.status();
          break;
        }
        if (r->pods_size() > 0) {
          ++initial_hits[request_class[i]];
        } else {
          ++missing;
        }
      }
      // Only an unreachable server is worth waiting for.
      if (!error.ok() && (absl::Now() >= deadline || error.code() != absl::StatusCode::kUnavailable)) {
        std::cerr << "kvindex-bench: Match failed: " << error << "\n";
        return 1;
      }
      if (error.ok() && missing == 0) break;
      if (absl::Now() >= deadline) {
        spdlog::warn("{} of {} prompts still match no pod after {}", missing, requests.size(),
                     absl::FormatDuration(wait));
        break;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
  }

  // --rpc=route: each prompt to each pod, the Match request's prompt (tokens or hashes) as it is.
  std::vector<std::string> route_pods;
  std::vector<std::string> route_requests;  // serialized RecordRoutingRequest
  std::vector<size_t> route_request_class;
  if (route && mode != "health") {
    if (const std::string pods = absl::GetFlag(FLAGS_route_pods); !pods.empty()) {
      route_pods = absl::StrSplit(pods, ',', absl::SkipEmpty());
    } else {
      absl::StatusOr<v1::ListPodsResponse> listed = (*sync_client)->ListPods();
      if (!listed.ok()) {
        std::cerr << "kvindex-bench: ListPods failed: " << listed.status() << "\n";
        return 1;
      }
      for (const v1::PodInfo& pod : listed->pods()) route_pods.push_back(pod.key());
    }
    if (route_pods.empty()) {
      std::cerr << "kvindex-bench: --rpc=route needs pods: the server lists none; pass --route_pods\n";
      return 1;
    }
    const auto add = [&](const std::vector<uint32_t>& tokens, const std::string& pod) {
      v1::RecordRoutingRequest r;
      r.set_model(model);
      r.set_lora_name(lora_name);
      if (request_kind == "tokens") {
        r.mutable_token_ids()->Assign(tokens.begin(), tokens.end());
      } else {
        const std::vector<uint64_t> hashes = HashPrefix(ContextSeed(model, lora_name, block_size), tokens, block_size);
        r.mutable_block_hashes()->Assign(hashes.begin(), hashes.end());
      }
      r.set_pod(pod);
      r.set_ttl_ms(absl::GetFlag(FLAGS_route_ttl_ms));
      route_requests.push_back(r.SerializeAsString());
    };
    if (const size_t fresh = absl::GetFlag(FLAGS_route_prompts); fresh > 0) {
      std::mt19937 rng(20261206);
      std::vector<uint32_t> tokens;
      route_request_class.clear();
      for (size_t i = 0; i < fresh; ++i) {
        const size_t c = i % mix.size();
        tokens.resize(class_tokens[c]);
        for (uint32_t& t : tokens) t = rng() % 32000;
        add(tokens, route_pods[i % route_pods.size()]);
        route_request_class.push_back(c);
      }
    } else {
      for (size_t i = 0; i < prompts.size(); ++i) {
        for (const std::string& pod : route_pods) {
          add(prompts[i], pod);
          route_request_class.push_back(request_class[i]);
        }
      }
    }
  }

  // Channels and serialized requests.
  LoadOptions base;
  for (size_t i = 0; i < std::max<size_t>(absl::GetFlag(FLAGS_channels), 1); ++i) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(*target, static_cast<int>(i));
    if (!channel.ok()) {
      std::cerr << "kvindex-bench: " << channel.status() << "\n";
      return 2;
    }
    base.channels.push_back(*std::move(channel));
  }
  base.concurrency = std::max<size_t>(absl::GetFlag(FLAGS_concurrency), 1);
  base.threads = std::max<size_t>(absl::GetFlag(FLAGS_client_threads), 1);
  base.warmup = absl::GetFlag(FLAGS_warmup);
  base.duration = absl::GetFlag(FLAGS_duration);
  base.token = target->token;

  LoadOptions match = base;
  match.method = route ? kRouteMethod : kMatchMethod;
  if (route) {
    for (const std::string& r : route_requests) match.requests.push_back(ToByteBuffer(r));
    match.request_class = route_request_class;
  } else {
    for (const auto& r : requests) match.requests.push_back(ToByteBuffer(r.SerializeAsString()));
    match.request_class = request_class;
  }
  match.classes = mix.size();
  {
    // Weighted schedule: each class appears in proportion to its weight, interleaved.
    double total = 0;
    for (const MixEntry& e : mix) total += e.weight;
    std::vector<double> credit(mix.size(), 0);
    std::vector<size_t> next_in_class(mix.size(), 0);
    for (int i = 0; i < 1000; ++i) {
      size_t best = 0;
      for (size_t c = 0; c < mix.size(); ++c) {
        credit[c] += mix[c].weight / total;
        if (credit[c] > credit[best]) best = c;
      }
      credit[best] -= 1;
      match.schedule.push_back(best * per_length + (next_in_class[best]++ % per_length));
    }
    if (route && absl::GetFlag(FLAGS_route_prompts) > 0) {
      match.schedule.clear();  // round robin over the new prompts
    } else if (route) {
      // Prompt-major requests: the schedule's prompts, each cycle of it to the next pod.
      std::vector<size_t> prompts_schedule = std::move(match.schedule);
      match.schedule.clear();
      const size_t pods = route_pods.size();
      for (size_t j = 0; j < prompts_schedule.size() * pods; ++j) {
        match.schedule.push_back(prompts_schedule[j % prompts_schedule.size()] * pods +
                                 (j + j / prompts_schedule.size()) % pods);
      }
    }
  }
  std::vector<HitCounters> hits(base.threads, HitCounters(mix.size()));
  std::vector<uint64_t> routed_blocks(base.threads, 0);  // --rpc=route: entries written or refreshed
  match.on_response = [&](size_t thread, size_t request, grpc::ByteBuffer& buffer) {
    if (route) {
      v1::RecordRoutingResponse response;
      grpc::ProtoBufferReader reader(&buffer);
      if (response.ParseFromZeroCopyStream(&reader)) routed_blocks[thread] += response.blocks();
      return;
    }
    v1::MatchResponse response;
    grpc::ProtoBufferReader reader(&buffer);
    if (!response.ParseFromZeroCopyStream(&reader)) return;
    HitCounters& h = hits[thread];
    const size_t c = request_class[request];
    ++h.responses[c];
    if (response.pods_size() > 0) {
      ++h.hits[c];
      h.pods[c] += response.pods_size();
      h.matched_tokens[c] += response.pods(0).matched_tokens();
    }
  };

  LoadOptions health = base;
  health.method = kHealthMethod;
  health.requests.push_back(ToByteBuffer(""));  // HealthCheckRequest{service: ""}

  const auto run = [&](const LoadOptions& options) {
    PhaseResult p;
    const double cpu0 = ServerCpu(server_pid);
    p.load = RunClosedLoop(options);
    p.server_cpu_seconds = ServerCpu(server_pid) - cpu0;
    return p;
  };
  Totals health_total, match_total;
  nlohmann::json rounds = nlohmann::json::array();
  const int round_count = std::max(absl::GetFlag(FLAGS_rounds), 1);
  uint64_t health_calls_all = 0, match_calls_all = 0;
  for (int round = 0; round < round_count; ++round) {
    nlohmann::json r = {{"round", round + 1}};
    if (mode != "match") {
      PhaseResult p = run(health);
      health_total.Add(p);
      health_calls_all += p.load.all_calls;
      r["health_rps"] = p.load.rps();
    }
    if (mode != "health") {
      PhaseResult p = run(match);
      match_total.Add(p);
      match_calls_all += p.load.all_calls;
      r[phase_key + "_rps"] = p.load.rps();
    }
    if (mode == "both" && r["health_rps"].get<double>() > 0) {
      r[phase_key + "_to_health"] = r[phase_key + "_rps"].get<double>() / r["health_rps"].get<double>();
    }
    spdlog::info("round {}: {}", round + 1, r.dump());
    rounds.push_back(std::move(r));
  }
  const MachineInfo machine_end = ReadMachineInfo();

  // Report.
  nlohmann::json report;
  report["tool"] = "kvindex-bench";
  report["time"] = absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
  report["server"] = target->server;
  report["spawned"] = spawn;
  report["machine"] = ToJson(machine_start);
  report["machine"]["loadavg_end"] = {machine_end.loadavg[0], machine_end.loadavg[1], machine_end.loadavg[2]};
  report["config"] = {{"concurrency", base.concurrency},
                      {"client_threads", base.threads},
                      {"channels", base.channels.size()},
                      {"duration_s", absl::ToDoubleSeconds(base.duration)},
                      {"warmup_s", absl::ToDoubleSeconds(base.warmup)},
                      {"rounds", round_count},
                      {"mode", mode},
                      {"rpc", rpc},
                      {"model", model},
                      {"request", request_kind},
                      {"block_size", block_size},
                      {"prompts_per_length", per_length},
                      {"prompt_mix", nlohmann::json::array()}};
  for (const MixEntry& e : mix) report["config"]["prompt_mix"].push_back({{"tokens", e.tokens}, {"weight", e.weight}});
  if (spawn) report["config"]["sim_args"] = absl::GetFlag(FLAGS_sim_args);
  if (route) {
    report["config"]["route_pods"] = route_pods;
    report["config"]["route_ttl_ms"] = absl::GetFlag(FLAGS_route_ttl_ms);
  }

  const auto phase_json = [&](Totals& t, uint64_t all_calls) {
    std::vector<int64_t> all;
    for (const auto& v : t.latency_ns) all.insert(all.end(), v.begin(), v.end());
    nlohmann::json j = {{"rps", t.rps()},
                        {"calls", t.ok},
                        {"errors", t.errors},
                        {"seconds", t.seconds},
                        {"latency", ToJson(Summarize(all))},
                        {"client_cpu_us_per_call", all_calls > 0 ? t.client_cpu * 1e6 / all_calls : 0}};
    if (server_pid > 0) j["server_cpu_us_per_call"] = all_calls > 0 ? t.server_cpu * 1e6 / all_calls : 0;
    if (!t.error_codes.empty()) j["error_codes"] = t.error_codes;
    return j;
  };
  if (mode != "match") report["health"] = phase_json(health_total, health_calls_all);
  if (mode != "health" && route) {
    nlohmann::json m = phase_json(match_total, match_calls_all);
    uint64_t blocks = 0;
    for (uint64_t b : routed_blocks) blocks += b;
    m["blocks_per_call"] = match_total.ok > 0 ? static_cast<double>(blocks) / match_total.ok : 0;
    report["route"] = std::move(m);
  } else if (mode != "health") {
    nlohmann::json m = phase_json(match_total, match_calls_all);
    HitCounters sum(mix.size());
    for (const HitCounters& h : hits) {
      for (size_t c = 0; c < mix.size(); ++c) {
        sum.responses[c] += h.responses[c];
        sum.hits[c] += h.hits[c];
        sum.pods[c] += h.pods[c];
        sum.matched_tokens[c] += h.matched_tokens[c];
      }
    }
    uint64_t responses = 0, hit = 0, pods = 0;
    double matched_fraction = 0;
    m["by_prompt"] = nlohmann::json::array();
    for (size_t c = 0; c < mix.size(); ++c) {
      responses += sum.responses[c];
      hit += sum.hits[c];
      pods += sum.pods[c];
      const double frac = sum.responses[c] > 0 ? static_cast<double>(sum.matched_tokens[c]) /
                                                     (static_cast<double>(sum.responses[c]) * class_tokens[c])
                                               : 0;
      matched_fraction += frac * static_cast<double>(sum.responses[c]);
      m["by_prompt"].push_back(
          {{"tokens", class_tokens[c]},
           {"weight", mix[c].weight},
           {"rps", match_total.seconds > 0 ? static_cast<double>(match_total.latency_ns[c].size()) / match_total.seconds
                                           : 0},
           {"latency", ToJson(Summarize(match_total.latency_ns[c]))},
           {"hit_ratio", sum.responses[c] > 0 ? static_cast<double>(sum.hits[c]) / sum.responses[c] : 0},
           {"pods_per_hit", sum.hits[c] > 0 ? static_cast<double>(sum.pods[c]) / sum.hits[c] : 0},
           {"best_matched_fraction", frac},
           {"prompts_hitting_before_run", initial_hits[c]}});
    }
    m["hit_ratio"] = responses > 0 ? static_cast<double>(hit) / responses : 0;
    m["pods_per_hit"] = hit > 0 ? static_cast<double>(pods) / hit : 0;
    m["best_matched_fraction"] = responses > 0 ? matched_fraction / responses : 0;
    report["match"] = std::move(m);
  }
  if (mode == "both") {
    report[phase_key + "_to_health"] = health_total.rps() > 0 ? match_total.rps() / health_total.rps() : 0;
    if (!route) report["target_match_to_health"] = 0.8;
  }
  report["rounds"] = rounds;

  if (const std::string path = absl::GetFlag(FLAGS_json_file); !path.empty()) {
    std::ofstream(path) << report.dump(2) << "\n";
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << report.dump(2) << std::endl;
  } else {
    std::cout << absl::StrFormat(
        "kvindex-bench: server %s%s; %s by %s; concurrency %d, %d client thread(s), %d connection(s); "
        "%d round(s) of %s per phase after %s warmup\n",
        target->server, spawn ? " (spawned, with kvindex-sim)" : "", phase_rpc,
        request_kind == "hashes" ? "block hashes" : "tokens",
        base.concurrency, base.threads,
        base.channels.size(), round_count, absl::FormatDuration(base.duration), absl::FormatDuration(base.warmup));
    std::cout << absl::StrFormat("machine: %u x %s; load average %s at start, %s at end\n\n", machine_start.nproc,
                                 machine_start.cpu_model, LoadAverageText(machine_start),
                                 LoadAverageText(machine_end));
    std::cout << absl::StrFormat("%-22s %10s %9s %9s %9s %9s %8s %10s %10s\n", "rpc", "rps", "p50 us", "p90 us",
                                 "p99 us", "p99.9 us", "errors", "srv us/rpc", "cli us/rpc");
    const auto row = [&](const std::string& name, const nlohmann::json& j) {
      const nlohmann::json& l = j["latency"];
      std::cout << absl::StrFormat(
          "%-22s %10.0f %9.0f %9.0f %9.0f %9.0f %8d %10s %10.1f\n", name, j["rps"].get<double>(),
          l["p50_us"].get<double>(), l["p90_us"].get<double>(), l["p99_us"].get<double>(),
          l["p999_us"].get<double>(), j.value("errors", uint64_t{0}),
          j.contains("server_cpu_us_per_call") ? absl::StrFormat("%.1f", j["server_cpu_us_per_call"].get<double>())
                                               : "-",
          j.value("client_cpu_us_per_call", 0.0));
    };
    if (report.contains("health")) row("Health/Check (empty)", report["health"]);
    if (report.contains("route")) {
      row("RecordRouting", report["route"]);
      std::cout << absl::StrFormat("\nRecordRouting: %.1f speculative entries written or refreshed per call, to %d pod(s), "
                                   "ttl_ms %d\n",
                                   report["route"]["blocks_per_call"].get<double>(), route_pods.size(),
                                   absl::GetFlag(FLAGS_route_ttl_ms));
    }
    if (report.contains("match")) {
      row("Match (mix)", report["match"]);
      for (const nlohmann::json& p : report["match"]["by_prompt"]) {
        if (mix.size() < 2) break;
        std::cout << absl::StrFormat("  %-20s %10.0f %9.0f %9.0f %9.0f %9.0f\n",
                                     absl::StrCat(p["tokens"].get<uint32_t>(), " tokens"), p["rps"].get<double>(),
                                     p["latency"]["p50_us"].get<double>(), p["latency"]["p90_us"].get<double>(),
                                     p["latency"]["p99_us"].get<double>(), p["latency"]["p999_us"].get<double>());
      }
      const nlohmann::json& m = report["match"];
      std::cout << absl::StrFormat(
          "\nMatch hits: %.1f%% of responses name a pod, %.1f pods per hit, best pod holds %.1f%% of the prompt\n",
          100 * m["hit_ratio"].get<double>(), m["pods_per_hit"].get<double>(),
          100 * m["best_matched_fraction"].get<double>());
    }
    if (report.contains(phase_key + "_to_health")) {
      std::cout << absl::StrFormat("%s / empty-RPC throughput: %.2f%s", phase_rpc,
                                   report[phase_key + "_to_health"].get<double>(),
                                   route ? "" : " (target >= 0.80)");
      if (round_count > 1) {
        std::cout << "; per round:";
        for (const nlohmann::json& r : rounds) {
          std::cout << absl::StrFormat(" %.2f", r.value(phase_key + "_to_health", 0.0));
        }
      }
      std::cout << "\n";
    }
    for (const char* phase : {"health", "match", "route"}) {
      if (report.contains(phase) && report[phase].contains("error_codes")) {
        std::cout << phase << " errors: " << report[phase]["error_codes"].dump() << "\n";
      }
    }
  }

  server.reset();
  sim.reset();
  if (!work_dir.empty()) RemoveTree(work_dir);
  const bool failed = (report.contains("health") && report["health"]["calls"].get<uint64_t>() == 0) ||
                      (report.contains("match") && report["match"]["calls"].get<uint64_t>() == 0) ||
                      (report.contains("route") && report["route"]["calls"].get<uint64_t>() == 0);
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace kvindex::bench

int main(int argc, char** argv) {
  // absl's --help exits 1 and matches flags to the binary's name (none here).
  constexpr absl::string_view kUsage =
      "gRPC load generator for kvindex-server: Match (or RecordRouting) RPS and latency, and the same for an empty RPC.\n"
      "  kvindex-bench --spawn --prompt_mix=512:1,2048:2,8192:1 --concurrency=16 --duration=5s\n"
      "  kvindex-bench --server=HOST:PORT --prompts_file=prompts.json --prompt_tokens=2048 [--json]\n"
      "  kvindex-bench --spawn --rpc=route --prompt_tokens=2048 [--route_ttl_ms=N]   # RecordRouting instead";
  if (kvindex::HelpRequested(argc, argv)) {
    std::cout << kvindex::FlagsHelp(absl::StrCat("kvindex-bench: ", kUsage), {__FILE__, kvindex::bench::TargetFlagsFile()});
    return 0;
  }
  absl::SetProgramUsageMessage(kUsage);
  absl::ParseCommandLine(argc, argv);
  return kvindex::bench::Main();
}
