// kvindex-sim: simulated vLLM / SGLang engines publishing real KV-cache events
// over ZeroMQ (../shared/wire/README.md), with the ground truth of what each
// holds. Pod i (dp size d) publishes dp rank r on 127.0.0.1 port
// base + 2*d*i + r and answers replay on base + 2*d*i + d + r (d = 1: base+2i and
// base+2i+1). Also the ingestion load generator (--rate=0).

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/util/open_files.h"
#include "nlohmann/json.hpp"
#include "server/flags_help.h"
#include "spdlog/spdlog.h"
#include "tools/sim/atomic_file.h"
#include "tools/sim/gateway.h"
#include "tools/sim/pod_snapshot_text.h"
#include "tools/sim/sim_engine.h"
#include "tools/sim/sim_runner.h"
#include "tools/sim/truth_writer.h"
#include "zmq.hpp"

// Pods and wire.
ABSL_FLAG(uint32_t, pods, 4, "Simulated engine pods.");
ABSL_FLAG(uint32_t, dp_size, 1, "Data-parallel ranks per pod (one engine each).");
ABSL_FLAG(std::string, namespace, "default", "Kubernetes namespace of the pods.");
ABSL_FLAG(std::string, name_prefix, "sim-", "Pod i is named <name_prefix><i>.");
ABSL_FLAG(std::string, ip, "127.0.0.1", "Address to bind and to report as the pods' IP.");
ABSL_FLAG(uint32_t, base_port, 5557, "First port (see the file comment); 0: every socket on an ephemeral port.");
ABSL_FLAG(std::string, ports, "",
          "Explicit ports instead of --base_port: one events[:replay] per engine, comma-separated, in order "
          "(pod 0 ranks 0..d-1, pod 1, ...), e.g. a previous run's from its truth file, to restart on the same ports.");
ABSL_FLAG(bool, replay, true, "Give every engine a replay ROUTER socket.");
ABSL_FLAG(std::string, replay_form, "seq", "Replay replies: seq ([\"\", seq, payload]), topic ([\"\", topic, seq, payload]) or mixed (per pod).");
ABSL_FLAG(uint64_t, replay_buffer, 10000, "Batches kept for replay per engine (vLLM's buffer_steps).");
ABSL_FLAG(uint64_t, replay_buffer_mb, 64, "Most payload MiB kept for replay per engine.");
ABSL_FLAG(std::string, topic, "", "Topic frame; {ip}, {model}, {pod} and {rank} are replaced (llm-d: kv@{ip}@{model}).");
ABSL_FLAG(std::string, layout, "map", "Payload layout: map (current vLLM), array (older vLLM), sglang, or mixed (per pod).");
ABSL_FLAG(std::string, hash, "int", "Engine hashes on the wire: int, bytes (32-byte digests) or mixed (per pod).");
ABSL_FLAG(int32_t, sndhwm, 100000, "PUB high-water mark (messages); beyond it ZeroMQ drops, as engines do.");

// Engines.
ABSL_FLAG(std::string, model, "sim-model", "Served model name.");
ABSL_FLAG(std::string, lora_name, "", "LoRA adapter name carried by every BlockStored (lora_id 1); empty: none.");
ABSL_FLAG(std::string, block_size, "16", "Tokens per block; a comma list is assigned to pods round robin.");
ABSL_FLAG(uint64_t, capacity_blocks, 2048, "GPU blocks per engine (LRU beyond).");
ABSL_FLAG(uint64_t, cpu_capacity_blocks, 0, "CPU offload blocks per engine; 0: no CPU tier.");
ABSL_FLAG(std::string, offload_chunk_blocks, "0",
          "vLLM OffloadingConnector: after each request, every full chunk of this many GPU blocks goes to the CPU "
          "tier (--cpu_capacity_blocks) as one token-less event per chunk hash; 0: no chunks (the CPU tier, if any, "
          "offloads evicted blocks). A comma list is assigned to pods round robin.");
ABSL_FLAG(std::string, hybrid, "none",
          "Hybrid model: none, window:W (group 1 a sliding window of W tokens) or mamba (group 1 Mamba). A comma "
          "list is assigned to pods round robin. Not for the sglang layout (pods of it stay single-group).");
ABSL_FLAG(double, mm_fraction, 0,
          "Fraction of new conversations whose first turn opens with an image (placeholder tokens, extra keys). "
          "vLLM layouts only.");
ABSL_FLAG(uint32_t, salted_tenants, 0,
          "Tenants whose conversations carry a cache_salt (one more tenant is unsalted); 0: none. vLLM layouts only "
          "(the map layout sends it as SGLang's cache_salt field, the array layout in extra_keys).");
ABSL_FLAG(bool, one_removal_per_event, false, "One BlockRemoved event per evicted block (as vLLM), not one per run.");
ABSL_FLAG(absl::Duration, restart_every, absl::ZeroDuration(), "Restart each engine this often (staggered); 0: never.");
ABSL_FLAG(bool, clear_on_restart, false, "Publish AllBlocksCleared as batch 0 after a restart (vLLM does not).");
ABSL_FLAG(bool, rebind_on_restart, true, "Close and rebind the sockets on restart, as a new process would.");

// Workload.
ABSL_FLAG(uint64_t, seed, 1, "Seed of the workload and the engine hashes.");
ABSL_FLAG(uint32_t, system_prompts, 4, "System prompts shared by all pods (0: none).");
ABSL_FLAG(uint32_t, system_prompt_tokens, 512, "Tokens per system prompt.");
ABSL_FLAG(uint32_t, conversations, 16, "Live conversations per engine.");
ABSL_FLAG(uint32_t, turn_tokens, 128, "Mean tokens a turn adds to a conversation.");
ABSL_FLAG(uint32_t, max_turns, 6, "Turns before a conversation is replaced (1: every prompt new).");
ABSL_FLAG(uint32_t, vocab_size, 32000, "Token ids are drawn from [0, vocab_size).");

// Traffic.
ABSL_FLAG(double, rate, 10, "Requests per second per engine; 0: as fast as possible (load generation).");
ABSL_FLAG(bool, stagger, true,
          "Offset each engine's request schedule by a fraction of the interval, as independent pods are; "
          "false: all engines publish at the same instants.");
ABSL_FLAG(uint64_t, requests, 0, "Requests per engine, then the traffic stops; 0: no limit.");
ABSL_FLAG(uint64_t, requests_per_batch, 1, "Requests whose events share one batch (message).");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(), "Traffic time; 0: until SIGINT/SIGTERM or --requests.");
ABSL_FLAG(bool, keep_running, false, "After the traffic stops, keep the sockets up (replay served) until a signal.");
ABSL_FLAG(uint32_t, threads, 1, "Threads driving the engines.");
ABSL_FLAG(int32_t, zmq_io_threads, 1, "ZeroMQ I/O threads.");

// Gateway mode (tools/sim/gateway.h): route bursts through a kvindex server instead of the traffic above.
ABSL_FLAG(std::string, gateway, "",
          "Gateway mode: the kvindex server (host:port) to route through. The simulator pushes its pods to it "
          "(SyncPods), waits until it follows every engine, routes --bursts bursts by Match (and RecordRouting "
          "with --gateway_hint), prints its report in the summary line and exits. --rate, --requests and the "
          "workload flags other than --seed and --vocab_size do not apply.");
ABSL_FLAG(std::string, gateway_token, "", "Gateway mode: bearer token for the server (KVINDEX_TOKEN when empty).");
ABSL_FLAG(bool, gateway_hint, false, "Gateway mode: send RecordRouting for every pick.");
ABSL_FLAG(uint32_t, bursts, 16, "Gateway mode: bursts of requests, each sharing a new prefix.");
ABSL_FLAG(uint32_t, burst_size, 8, "Gateway mode: requests per burst.");
ABSL_FLAG(uint32_t, burst_prefix_tokens, 1024, "Gateway mode: tokens of a burst's shared prefix.");
ABSL_FLAG(uint32_t, burst_suffix_tokens, 64, "Gateway mode: tokens each request adds to the prefix.");
ABSL_FLAG(absl::Duration, request_gap, absl::Milliseconds(5), "Gateway mode: time between a burst's requests.");
ABSL_FLAG(absl::Duration, burst_gap, absl::Milliseconds(200), "Gateway mode: time between bursts.");
ABSL_FLAG(absl::Duration, event_delay, absl::Milliseconds(300),
          "Gateway mode: time from an engine serving a request to its KV events on the wire (delivery under load).");

// Outputs.
ABSL_FLAG(std::string, truth_file, "", "Write the ground truth JSON here (atomically), periodically and at exit.");
ABSL_FLAG(std::string, prompts_file, "", "Write sample prompts with expected matches here, with the truth.");
ABSL_FLAG(absl::Duration, truth_interval, absl::Seconds(1), "How often to rewrite --truth_file / --prompts_file.");
ABSL_FLAG(std::string, pods_file, "", "Write the pods as a kvindex.v1.PodSnapshot text proto here once bound.");
ABSL_FLAG(bool, print_pods, false, "Print the pods as a kvindex.v1.PodSnapshot text proto and exit (needs --base_port).");
ABSL_FLAG(absl::Duration, stats_interval, absl::Seconds(5), "How often to log throughput; 0: never.");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error, critical or off.");

namespace kvindex::sim {
namespace {

template <typename T>
absl::StatusOr<std::vector<T>> ParseChoices(const std::string& flag, const std::string& value,
                                            absl::StatusOr<T> (*parse)(std::string_view), std::vector<T> mixed) {
  if (value == "mixed") return mixed;
  absl::StatusOr<T> one = parse(value);
  if (!one.ok()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", one.status().message()));
  return std::vector<T>{*one};
}

absl::StatusOr<ReplyForm> ParseReplyForm(std::string_view name) {
  if (name == "seq") return ReplyForm::kSeqPayload;
  if (name == "topic") return ReplyForm::kTopicSeqPayload;
  return absl::InvalidArgumentError(absl::StrCat("unknown replay form \"", std::string(name), "\" (seq, topic)"));
}

absl::StatusOr<std::vector<uint32_t>> ParseBlockSizes(const std::string& value) {
  std::vector<uint32_t> sizes;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    uint32_t size = 0;
    if (!absl::SimpleAtoi(part, &size) || size == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--block_size: \"", part, "\" is not a positive integer"));
    }
    sizes.push_back(size);
  }
  return sizes;
}

absl::StatusOr<std::vector<uint32_t>> ParseCounts(const std::string& flag, const std::string& value) {
  std::vector<uint32_t> out;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    uint32_t n = 0;
    if (!absl::SimpleAtoi(part, &n)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", part, "\" is not a count"));
    }
    out.push_back(n);
  }
  return out;
}

struct HybridChoice {
  HybridKind kind = HybridKind::kNone;
  uint32_t window = 0;
};

absl::StatusOr<std::vector<HybridChoice>> ParseHybrid(const std::string& value) {
  std::vector<HybridChoice> out;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    HybridChoice c;
    if (part == "mamba") {
      c.kind = HybridKind::kMamba;
    } else if (absl::ConsumePrefix(&part, "window:")) {
      c.kind = HybridKind::kSlidingWindow;
      if (!absl::SimpleAtoi(part, &c.window) || c.window == 0) {
        return absl::InvalidArgumentError(absl::StrCat("--hybrid: window \"", part, "\" is not a positive token count"));
      }
    } else if (part != "none") {
      return absl::InvalidArgumentError(absl::StrCat("--hybrid: \"", part, "\" is not none, window:W or mamba"));
    }
    out.push_back(c);
  }
  return out;
}

// --ports: (events, replay) per engine; replay 0 when not given. Empty when the flag is.
absl::StatusOr<std::vector<std::pair<uint32_t, uint32_t>>> ParsePorts(const std::string& value, size_t engines) {
  std::vector<std::pair<uint32_t, uint32_t>> ports;
  if (value.empty()) return ports;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    std::vector<absl::string_view> fields = absl::StrSplit(part, ':');
    uint32_t events = 0, replay = 0;
    if (fields.size() > 2 || !absl::SimpleAtoi(fields[0], &events) || events == 0 || events > 65535 ||
        (fields.size() == 2 && (!absl::SimpleAtoi(fields[1], &replay) || replay == 0 || replay > 65535))) {
      return absl::InvalidArgumentError(absl::StrCat("--ports: \"", part, "\" is not events[:replay] (ports 1-65535)"));
    }
    ports.emplace_back(events, replay);
  }
  if (ports.size() != engines) {
    return absl::InvalidArgumentError(absl::StrCat("--ports names ", ports.size(), " engines, not ", engines));
  }
  return ports;
}

// One SimEngineOptions per (pod, rank), pods' ranks adjacent.
absl::StatusOr<std::vector<SimEngineOptions>> PlanEngines() {
  auto layouts = ParseChoices<PayloadLayout>("layout", absl::GetFlag(FLAGS_layout), ParsePayloadLayout,
                                             {PayloadLayout::kMap, PayloadLayout::kArray, PayloadLayout::kSglang});
  if (!layouts.ok()) return layouts.status();
  auto hashes = ParseChoices<HashEncoding>("hash", absl::GetFlag(FLAGS_hash), ParseHashEncoding,
                                           {HashEncoding::kInt, HashEncoding::kBytes});
  if (!hashes.ok()) return hashes.status();
  auto forms = ParseChoices<ReplyForm>("replay_form", absl::GetFlag(FLAGS_replay_form), ParseReplyForm,
                                       {ReplyForm::kSeqPayload, ReplyForm::kTopicSeqPayload});
  if (!forms.ok()) return forms.status();
  auto block_sizes = ParseBlockSizes(absl::GetFlag(FLAGS_block_size));
  if (!block_sizes.ok()) return block_sizes.status();
  auto chunks = ParseCounts("offload_chunk_blocks", absl::GetFlag(FLAGS_offload_chunk_blocks));
  if (!chunks.ok()) return chunks.status();
  auto hybrids = ParseHybrid(absl::GetFlag(FLAGS_hybrid));
  if (!hybrids.ok()) return hybrids.status();
  const double mm_fraction = absl::GetFlag(FLAGS_mm_fraction);
  if (!(mm_fraction >= 0 && mm_fraction <= 1)) return absl::InvalidArgumentError("--mm_fraction must be in [0, 1]");
  const uint32_t pods = absl::GetFlag(FLAGS_pods);
  const uint32_t dp = std::max<uint32_t>(absl::GetFlag(FLAGS_dp_size), 1);
  const uint32_t base = absl::GetFlag(FLAGS_base_port);
  if (base != 0 && uint64_t{base} + uint64_t{2} * dp * pods > 65536) {
    return absl::InvalidArgumentError(absl::StrCat("--base_port ", base, " leaves no room for ", pods, " pods"));
  }
  if (absl::GetFlag(FLAGS_capacity_blocks) == 0) return absl::InvalidArgumentError("--capacity_blocks must be >= 1");
  auto ports = ParsePorts(absl::GetFlag(FLAGS_ports), size_t{pods} * dp);
  if (!ports.ok()) return ports.status();
  if (!ports->empty() && absl::GetFlag(FLAGS_replay)) {
    for (const auto& [events, replay] : *ports) {
      if (replay == 0) {
        return absl::InvalidArgumentError("--ports: every engine needs a replay port (or --replay=false)");
      }
    }
  }

  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  std::vector<SimEngineOptions> plan;
  for (uint32_t i = 0; i < pods; ++i) {
    for (uint32_t r = 0; r < dp; ++r) {
      SimEngineOptions o;
      const size_t index = plan.size();
      o.ns = absl::GetFlag(FLAGS_namespace);
      o.pod_name = absl::StrCat(absl::GetFlag(FLAGS_name_prefix), i);
      o.dp_rank = r;
      o.ip = absl::GetFlag(FLAGS_ip);
      o.layout = (*layouts)[i % layouts->size()];
      o.hashes = (*hashes)[i % hashes->size()];
      o.requests_per_batch = std::max<uint64_t>(absl::GetFlag(FLAGS_requests_per_batch), 1);
      o.clear_event_on_restart = absl::GetFlag(FLAGS_clear_on_restart);
      o.rebind_on_restart = absl::GetFlag(FLAGS_rebind_on_restart);

      o.workload.seed = seed;
      o.workload.stream = index;
      o.workload.vocab_size = absl::GetFlag(FLAGS_vocab_size);
      o.workload.system_prompts = absl::GetFlag(FLAGS_system_prompts);
      o.workload.system_prompt_tokens = absl::GetFlag(FLAGS_system_prompt_tokens);
      o.workload.conversations = std::max<uint32_t>(absl::GetFlag(FLAGS_conversations), 1);
      o.workload.turn_tokens = std::max<uint32_t>(absl::GetFlag(FLAGS_turn_tokens), 1);
      o.workload.max_turns = std::max<uint32_t>(absl::GetFlag(FLAGS_max_turns), 1);

      o.cache.block_size = (*block_sizes)[i % block_sizes->size()];
      o.cache.gpu_capacity_blocks = absl::GetFlag(FLAGS_capacity_blocks);
      o.cache.cpu_capacity_blocks = absl::GetFlag(FLAGS_cpu_capacity_blocks);
      o.cache.salt = Mix64(seed ^ Mix64(0xE9619E5A17ULL + index));
      o.cache.model = absl::GetFlag(FLAGS_model);
      o.cache.lora_name = absl::GetFlag(FLAGS_lora_name);
      o.cache.one_removal_per_event = absl::GetFlag(FLAGS_one_removal_per_event);
      o.cache.offload_chunk_blocks = (*chunks)[i % chunks->size()];
      if (o.cache.offload_chunk_blocks > 0 && o.cache.cpu_capacity_blocks > 0) {
        // kvindex finds a chunk's predecessors among the worker's GPU blocks
        // (README "Index semantics"): the GPU tier must hold a whole chunk.
        if (o.cache.gpu_capacity_blocks < o.cache.offload_chunk_blocks) {
          return absl::InvalidArgumentError(absl::StrCat("--offload_chunk_blocks=", o.cache.offload_chunk_blocks,
                                                         " needs --capacity_blocks >= ",
                                                         o.cache.offload_chunk_blocks));
        }
      }
      const bool vllm = o.layout != PayloadLayout::kSglang;
      if (vllm) {
        const HybridChoice& h = (*hybrids)[i % hybrids->size()];
        o.cache.hybrid = h.kind;
        o.cache.sliding_window = h.window;
        o.workload.mm_fraction = mm_fraction;
        o.workload.salted_tenants = absl::GetFlag(FLAGS_salted_tenants);
        o.cache.salt_as_field = o.layout == PayloadLayout::kMap;
      }

      o.publisher.host = o.ip;
      o.publisher.events_port = base == 0 ? 0 : base + 2 * dp * i + r;
      o.publisher.replay = absl::GetFlag(FLAGS_replay);
      o.publisher.replay_port = base == 0 ? 0 : base + 2 * dp * i + dp + r;
      if (!ports->empty()) std::tie(o.publisher.events_port, o.publisher.replay_port) = (*ports)[index];
      o.publisher.topic = absl::StrReplaceAll(
          absl::GetFlag(FLAGS_topic),
          {{"{ip}", o.ip}, {"{model}", o.cache.model}, {"{pod}", o.pod_name}, {"{rank}", absl::StrCat(r)}});
      o.publisher.reply_form = (*forms)[i % forms->size()];
      o.publisher.replay_buffer_batches = absl::GetFlag(FLAGS_replay_buffer);
      o.publisher.replay_buffer_bytes = absl::GetFlag(FLAGS_replay_buffer_mb) << 20;
      o.publisher.sndhwm = absl::GetFlag(FLAGS_sndhwm);
      plan.push_back(std::move(o));
    }
  }
  return plan;
}

// Rank 0 of each pod, with the given ports (rank 0's).
std::vector<SimPod> PodsOf(const std::vector<SimEngineOptions>& plan, const std::vector<uint32_t>& events_ports,
                           const std::vector<std::optional<uint32_t>>& replay_ports) {
  std::vector<SimPod> pods;
  for (size_t i = 0; i < plan.size(); ++i) {
    const SimEngineOptions& o = plan[i];
    if (o.dp_rank != 0) {
      ++pods.back().dp_size;
      continue;
    }
    SimPod p;
    p.ns = o.ns;
    p.name = o.pod_name;
    p.ip = o.ip;
    p.model = o.cache.model;
    p.lora_name = o.cache.lora_name;
    p.events_port = events_ports[i];
    p.replay_port = replay_ports[i];
    p.topic = o.publisher.topic;
    pods.push_back(std::move(p));
  }
  return pods;
}

struct Totals {
  uint64_t requests = 0, batches = 0, events = 0, bytes = 0, stored = 0, removed = 0, replays = 0, restarts = 0;
};

Totals Sum(const std::vector<std::unique_ptr<SimEngine>>& engines) {
  Totals t;
  for (const auto& e : engines) {
    const EngineCounters c = e->counters();
    t.requests += c.requests;
    t.batches += c.batches;
    t.events += c.events;
    t.bytes += c.publisher.bytes;
    t.stored += c.cache.stored_blocks + c.cache.loaded_blocks + c.cache.offloaded_blocks;
    t.removed += c.cache.removed_gpu + c.cache.removed_cpu;
    t.replays += c.publisher.replay_requests;
    t.restarts += c.restarts;
  }
  return t;
}

// Gateway mode: routes the bursts through `server` and prints the report.
int RunGateway(const std::string& server, const std::vector<SimEngine*>& engines, const std::string& pods,
               const sigset_t& signals) {
  client::ClientOptions client_options;
  client_options.server = server;
  client_options.token = absl::GetFlag(FLAGS_gateway_token);
  if (const char* token = std::getenv("KVINDEX_TOKEN"); client_options.token.empty() && token != nullptr) {
    client_options.token = token;
  }
  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client = client::KvIndexClient::Create(client_options);
  if (!client.ok()) {
    spdlog::error("gateway: {}", client.status().ToString());
    return 1;
  }
  GatewayOptions o;
  o.hint = absl::GetFlag(FLAGS_gateway_hint);
  o.bursts = absl::GetFlag(FLAGS_bursts);
  o.burst_size = std::max<uint32_t>(absl::GetFlag(FLAGS_burst_size), 1);
  o.prefix_tokens = absl::GetFlag(FLAGS_burst_prefix_tokens);
  o.suffix_tokens = absl::GetFlag(FLAGS_burst_suffix_tokens);
  o.request_gap = absl::GetFlag(FLAGS_request_gap);
  o.burst_gap = absl::GetFlag(FLAGS_burst_gap);
  o.event_delay = absl::GetFlag(FLAGS_event_delay);
  o.vocab_size = std::max<uint32_t>(absl::GetFlag(FLAGS_vocab_size), 1);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.model = absl::GetFlag(FLAGS_model);
  o.lora_name = absl::GetFlag(FLAGS_lora_name);
  Gateway gateway(client->get(), engines, o);
  auto stop = [&signals] {
    const timespec none{0, 0};
    const int sig = sigtimedwait(&signals, nullptr, &none);
    return sig == SIGINT || sig == SIGTERM;
  };
  if (absl::Status s = gateway.Connect(pods, stop); !s.ok()) {
    spdlog::error("gateway: {}", s.ToString());
    return 1;
  }
  spdlog::info("gateway: the server follows every engine; routing {} bursts of {} ({}hints)", o.bursts,
               o.burst_size, o.hint ? "" : "no ");
  absl::StatusOr<GatewayReport> report = gateway.Run(stop);
  if (!report.ok()) {
    spdlog::error("gateway: {}", report.status().ToString());
    return 1;
  }
  TruthWriter truth({.truth_file = absl::GetFlag(FLAGS_truth_file), .seed = absl::GetFlag(FLAGS_seed)});
  if (absl::Status s = truth.Write(engines); !s.ok()) {
    spdlog::error("{}", s.ToString());
    return 1;
  }
  std::cout << nlohmann::json{{"engines", engines.size()}, {"gateway", report->ToJson()}}.dump() << std::endl;
  return 0;
}

int Main() {
  spdlog::set_level(spdlog::level::from_str(absl::GetFlag(FLAGS_log_level)));
  absl::StatusOr<std::vector<SimEngineOptions>> plan = PlanEngines();
  if (!plan.ok()) {
    std::cerr << "kvindex-sim: " << plan.status().message() << "\n";
    return 2;
  }

  if (absl::GetFlag(FLAGS_print_pods)) {
    if (absl::GetFlag(FLAGS_base_port) == 0 && absl::GetFlag(FLAGS_ports).empty()) {
      std::cerr << "kvindex-sim: --print_pods needs a --base_port or --ports (use --pods_file with ephemeral ports)\n";
      return 2;
    }
    std::vector<uint32_t> events;
    std::vector<std::optional<uint32_t>> replays;
    for (const auto& o : *plan) {
      events.push_back(o.publisher.events_port);
      replays.push_back(o.publisher.replay ? std::optional<uint32_t>(o.publisher.replay_port) : std::nullopt);
    }
    std::cout << PodSnapshotText(PodsOf(*plan, events, replays));
    return 0;
  }

  // Signals are taken synchronously by this thread; every thread started
  // from here on (ZeroMQ's included) inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Thousands of engines in one process: two sockets each (PUB, replay ROUTER),
  // and per socket a mailbox, a listener and the connections of its peers.
  zmq::context_t context(absl::GetFlag(FLAGS_zmq_io_threads));
  const size_t sockets = 2 * plan->size() + 64;
  context.set(zmq::ctxopt::max_sockets,
              static_cast<int>(std::min<size_t>(sockets, std::max(1024, context.get(zmq::ctxopt::socket_limit)))));
  if (absl::StatusOr<OpenFilesLimit> files = RaiseOpenFilesLimit(6 * plan->size() + 256);
      files.ok() && files->soft < 6 * plan->size() + 256) {
    spdlog::warn("{} engines may need {} open files; the hard limit is {}: raise it (ulimit -Hn) or run fewer "
                 "engines per process", plan->size(), 6 * plan->size() + 256, files->hard);
  }
  std::vector<std::unique_ptr<SimEngine>> engines;
  std::vector<SimEngine*> engine_ptrs;
  std::vector<uint32_t> events_ports;
  std::vector<std::optional<uint32_t>> replay_ports;
  for (const SimEngineOptions& o : *plan) {
    absl::StatusOr<std::unique_ptr<SimEngine>> engine = SimEngine::Create(context, o);
    if (!engine.ok()) {
      spdlog::error("{}/{}#{}: {}", o.ns, o.pod_name, o.dp_rank, engine.status().ToString());
      return 1;
    }
    engines.push_back(*std::move(engine));
    engine_ptrs.push_back(engines.back().get());
    events_ports.push_back(engines.back()->events_port());
    replay_ports.push_back(engines.back()->replay_port());
  }
  for (size_t i = 0; i < engines.size(); ++i) {
    spdlog::info("{}#{}: PUB {}:{} replay {} layout {} hashes {} block size {}", engines[i]->pod_key(),
                 (*plan)[i].dp_rank, (*plan)[i].ip, events_ports[i],
                 replay_ports[i].has_value() ? absl::StrCat(*replay_ports[i]) : "none",
                 PayloadLayoutName((*plan)[i].layout), HashEncodingName((*plan)[i].hashes),
                 (*plan)[i].cache.block_size);
  }
  if (const std::string path = absl::GetFlag(FLAGS_pods_file); !path.empty()) {
    if (absl::Status s = WriteFileAtomically(path, PodSnapshotText(PodsOf(*plan, events_ports, replay_ports)));
        !s.ok()) {
      spdlog::error("{}", s.ToString());
      return 1;
    }
  }

  if (const std::string server = absl::GetFlag(FLAGS_gateway); !server.empty()) {
    return RunGateway(server, engine_ptrs, PodSnapshotText(PodsOf(*plan, events_ports, replay_ports)), signals);
  }

  RunnerOptions run;
  run.rate = absl::GetFlag(FLAGS_rate);
  run.stagger = absl::GetFlag(FLAGS_stagger);
  run.max_requests = absl::GetFlag(FLAGS_requests);
  run.duration = absl::GetFlag(FLAGS_duration);
  run.restart_every = absl::GetFlag(FLAGS_restart_every);
  run.threads = std::max<uint32_t>(absl::GetFlag(FLAGS_threads), 1);
  SimRunner runner(engine_ptrs, run);
  TruthWriter truth({.truth_file = absl::GetFlag(FLAGS_truth_file),
                     .prompts_file = absl::GetFlag(FLAGS_prompts_file),
                     .seed = absl::GetFlag(FLAGS_seed)});
  const absl::Duration truth_interval = absl::GetFlag(FLAGS_truth_interval);
  const absl::Duration stats_interval = absl::GetFlag(FLAGS_stats_interval);
  const bool keep_running = absl::GetFlag(FLAGS_keep_running);

  const absl::Time start = absl::Now();
  runner.Start();
  absl::Time next_truth = start + truth_interval;
  absl::Time next_stats = start + stats_interval;
  absl::Time traffic_end = absl::InfiniteFuture();
  Totals last_stats;
  bool traffic_logged = false;
  while (true) {
    const timespec tick{0, 20 * 1000 * 1000};
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("signal {}: stopping", sig);
      break;
    }
    const absl::Time now = absl::Now();
    if (runner.TrafficDone() && !traffic_logged) {
      traffic_logged = true;
      traffic_end = now;
      if (!keep_running) break;
      spdlog::info("traffic done; serving replay until SIGINT/SIGTERM");
      if (absl::Status s = truth.Write(engine_ptrs); !s.ok()) spdlog::warn("{}", s.ToString());
    }
    if (truth_interval > absl::ZeroDuration() && now >= next_truth) {
      next_truth = now + truth_interval;
      if (absl::Status s = truth.Write(engine_ptrs); !s.ok()) spdlog::warn("{}", s.ToString());
    }
    if (stats_interval > absl::ZeroDuration() && now >= next_stats) {
      const Totals t = Sum(engines);
      const double secs = absl::ToDoubleSeconds(now - next_stats + stats_interval);
      spdlog::info("{:.0f} requests/s, {:.0f} batches/s, {:.0f} blocks stored/s, {:.0f} removed/s, {:.1f} MB/s; "
                   "{} replays, {} restarts",
                   (t.requests - last_stats.requests) / secs, (t.batches - last_stats.batches) / secs,
                   (t.stored - last_stats.stored) / secs, (t.removed - last_stats.removed) / secs,
                   (t.bytes - last_stats.bytes) / secs / 1e6, t.replays, t.restarts);
      last_stats = t;
      next_stats = now + stats_interval;
    }
  }
  if (traffic_end == absl::InfiniteFuture()) traffic_end = absl::Now();
  runner.Stop();
  absl::Status status = runner.status();
  if (absl::Status s = truth.Write(engine_ptrs); !s.ok()) {
    spdlog::error("{}", s.ToString());
    status.Update(s);
  }

  const Totals t = Sum(engines);
  const double secs = std::max(absl::ToDoubleSeconds(traffic_end - start), 1e-9);
  nlohmann::json summary = {{"engines", engines.size()},
                            {"seconds", secs},
                            {"requests", t.requests},
                            {"batches", t.batches},
                            {"events", t.events},
                            {"payload_bytes", t.bytes},
                            {"blocks_stored", t.stored},
                            {"blocks_removed", t.removed},
                            {"blocks_stored_per_second", t.stored / secs},
                            {"batches_per_second", t.batches / secs},
                            {"replay_requests", t.replays},
                            {"restarts", t.restarts}};
  std::cout << summary.dump() << std::endl;
  return status.ok() ? 0 : 1;
}

}  // namespace
}  // namespace kvindex::sim

int main(int argc, char** argv) {
  // absl's --help exits 1 and matches flags to the binary's name (none here).
  constexpr absl::string_view kUsage =
      "simulated vLLM/SGLang engines publishing KV-cache events over ZeroMQ, with ground truth.\n"
      "  kvindex-sim --pods=4 --base_port=5557 --truth_file=truth.json --prompts_file=prompts.json\n"
      "  kvindex-sim --pods=4 --base_port=5557 --print_pods > pods.textproto\n"
      "  load: kvindex-sim --pods=8 --rate=0 --system_prompts=0 --max_turns=1 --turn_tokens=4096 "
      "--requests_per_batch=4 --duration=30s";
  if (kvindex::HelpRequested(argc, argv)) {
    std::cout << kvindex::FlagsHelp(absl::StrCat("kvindex-sim: ", kUsage), {__FILE__});
    return 0;
  }
  absl::SetProgramUsageMessage(kUsage);
  absl::ParseCommandLine(argc, argv);
  try {
    return kvindex::sim::Main();
  } catch (const zmq::error_t& e) {
    spdlog::critical("ZeroMQ: {}", e.what());
    return 1;
  }
}
