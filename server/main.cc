// kvindex-server: the process root. Flags (with KVINDEX_* environment
// fallbacks), logging, signals; everything else is KvIndexServer.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include <pthread.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/ingest/subscription_manager.h"
#include "core/util/open_files.h"
#include "server/bearer_auth.h"
#include "server/command_line.h"
#include "server/env_flags.h"
#include "server/flags_help.h"
#include "server/kvindex_server.h"
#include "server/manager_config.h"
#include "server/match_latch.h"
#include "server/memory_budget.h"
#include "server/pods_file.h"
#include "server/server_credentials.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

#if defined(__SANITIZE_THREAD__)
// TSan builds only. gRPC's libraries are not instrumented: the v1 reflection
// relay (server/reflection_v1.h) parses messages that gRPC's own v1alpha
// service serialized into a slice on another thread and handed over through
// gRPC core, whose synchronization TSan cannot see. Nothing of ours is
// suppressed: only reports with a frame in that library.
extern "C" const char* __tsan_default_suppressions() { return "race:libgrpc++_reflection.so\n"; }
#endif

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC address host:port (port 0 picks a free port).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding a shared token. When set, SyncPods needs the metadata "
          "'authorization: Bearer <token>'.");
ABSL_FLAG(bool, auth_all_rpcs, false,
          "With --auth_token_file: require the token on every kvindex.v1 RPC, not only SyncPods "
          "(health and reflection stay open).");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM server certificate chain; with --tls_key_file enables TLS.");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).");
ABSL_FLAG(std::string, pods_file, "",
          "kvindex.v1.PodSnapshot in protobuf text format, applied at start (for running without a "
          "control plane).");
ABSL_FLAG(uint32_t, max_match_tokens, 1000000, "Most token_ids (or block_hashes) one Match may carry.");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "Prometheus GET /metrics address host:port (port 0 picks a free port); empty disables.");
ABSL_FLAG(int32_t, max_message_bytes, 16 << 20, "Largest gRPC request or response message, in bytes.");
ABSL_FLAG(uint64_t, max_pods, 10000, "Most pods followed at once; further new pods are rejected.");
ABSL_FLAG(std::string, models, "",
          "Shard by model: follow only the pods whose model this regular expression (ECMAScript, whole name) "
          "matches, and answer Match only for those models (another is FAILED_PRECONDITION). Empty: every model");
ABSL_FLAG(uint64_t, max_workers, 0,
          "Most workers (pod, dp rank) followed at once; a pod that would go past it is rejected. The open-files "
          "limit is raised to what they need (2 per worker, 2 per concurrent replay, 256 more) at start. 0: as "
          "many as the hard open-files limit allows, at most 10000.");
ABSL_FLAG(uint64_t, max_concurrent_replays, 512,
          "Most replays out at once (each holds two open files until its engine answers or it times out). A mass "
          "subscribe queues the rest, workers whose engine has been heard from first; a queued replay's timeout "
          "starts when it goes out.");
ABSL_FLAG(int32_t, subscriber_threads, 2, "I/O threads of the ZMQ subscribers.");
ABSL_FLAG(uint64_t, max_blocks_per_worker, 4u << 20,
          "Most engine blocks one (pod, dp rank) may hold; past it blocks are evicted leaves first (a block "
          "goes only once no block held names it as parent, as engines evict), by second chance among the "
          "leaves (an approximation of LRU: a block stored since the evictor last looked at it is passed over "
          "once). 0: unlimited.");
ABSL_FLAG(uint64_t, max_index_entries, 64u << 20,
          "Most (block, worker) entries in the index; past it the worker holding the most entries loses one by "
          "leaves first, by second chance (see --max_blocks_per_worker). 0: unlimited.");
ABSL_FLAG(uint64_t, index_memory_mb, 0,
          "Memory budget of the index, MiB: lowers --max_speculative_entries to what 1/8 of it holds (400 B an "
          "entry), then --max_index_entries (and --max_blocks_per_worker) to what the rest holds "
          "(server/memory_budget.h). 0: only those caps apply.");
ABSL_FLAG(uint64_t, max_speculative_entries, 1u << 20,
          "Most speculative entries (RecordRouting); beyond it the least recently routed are dropped. 0: no cap.");
ABSL_FLAG(absl::Duration, speculative_ttl, absl::Seconds(2),
          "TTL of a RecordRouting without ttl_ms until the worker has enough confirmations to adapt it.");
ABSL_FLAG(absl::Duration, speculative_ttl_min, absl::Milliseconds(200), "Lower bound of the adaptive TTL.");
ABSL_FLAG(absl::Duration, speculative_ttl_max, absl::Seconds(30), "Upper bound of the adaptive TTL.");
ABSL_FLAG(uint32_t, default_block_size, 16,
          "Block size (tokens) of RecordRouting hints given by tokens for a model no event has shown one of.");
ABSL_FLAG(std::string, events_bind, "",
          "Also bind a ZMQ SUB socket here (e.g. tcp://*:5557) for engines that connect instead of bind.");
ABSL_FLAG(bool, kv_event_sync, true,
          "Subscribe to engines' KV events. false: pods are recorded but never subscribed. "
          "AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED is honoured too.");
ABSL_FLAG(std::string, snapshot_dir, "",
          "Directory (must exist) where the index and the pods are saved every --snapshot_interval and at "
          "SIGTERM, and loaded from at start: a restarted server knows the engines' caches at once and resumes "
          "each engine's stream after the saved batch. A snapshot that is corrupt, of another format version or "
          "of other hashing is refused (one log line, kvindex_snapshot_loads_total) and the server starts cold. "
          "Empty: no snapshots.");
ABSL_FLAG(absl::Duration, snapshot_interval, absl::Seconds(60),
          "How often to write a snapshot into --snapshot_dir (e.g. 60s, 5m).");
ABSL_FLAG(std::string, bootstrap_from, "",
          "A live replica (gRPC target HOST:PORT, e.g. the chart's headless Service) whose index is streamed in "
          "(ExportIndex) before the subscriptions start: this server knows the engines' caches at once and follows "
          "each engine after the peer's last batch; a peer's incomplete worker stays incomplete. The server's own "
          "--auth_token_file is presented as the token (replicas share it), and TLS is used when this server "
          "serves TLS (see --bootstrap_ca_file). No peer answering is tried 3 times (0.5 s, then 1 s apart). A failed "
          "bootstrap (no peer, wrong token, past --bootstrap_timeout) is one error line and "
          "kvindex_bootstrap_total{outcome}, and the server starts from "
          "its --snapshot_dir or cold. When it loads, --snapshot_dir's snapshot is not read (the peer's is newer). "
          "Empty: no bootstrap.");
ABSL_FLAG(absl::Duration, bootstrap_timeout, absl::Seconds(30),
          "Longest the bootstrap from --bootstrap_from may take, connection included; past it the server starts "
          "without it.");
ABSL_FLAG(std::string, bootstrap_ca_file, "",
          "PEM CA bundle verifying the --bootstrap_from peer's certificate; setting it (or serving TLS with "
          "--tls_cert_file) makes the bootstrap use TLS, presenting this server's own certificate when "
          "--tls_client_ca_file is set. Empty: the system's roots.");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error, critical or off.");

namespace {

constexpr char kUsage[] = R"(kvindex-server: prefix-cache index of LLM engines, served over gRPC (kvindex.v1.KvIndex).

Every flag --NAME falls back to the environment variable KVINDEX_<NAME IN CAPITALS>
(e.g. KVINDEX_LISTEN=127.0.0.1:50051); a flag on the command line wins over the environment.
AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED=false turns --kv_event_sync off (KVINDEX_KV_EVENT_SYNC wins).
Serves grpc.health.v1.Health and server reflection (v1 and v1alpha). SIGTERM/SIGINT: stop accepting, finish in-flight
calls, stop subscriptions, exit 0.

At start it prints one line on stdout with the bound addresses (port 0 picks one), whatever --log_level.
Exit codes: 0 after SIGTERM/SIGINT or --help; 2 when a flag, a KVINDEX_* variable or a file a flag names
(--pods_file, --auth_token_file) is wrong; 1 when a valid configuration cannot start (address in use,
TLS files unreadable or not PEM).

usage: kvindex-server [--listen=0.0.0.0:50051] [--pods_file=pods.textproto] [flags...])";

// In-flight calls get this long after SIGTERM; the whole stop must fit in 5 s.
constexpr absl::Duration kDrainTime = absl::Seconds(3);
constexpr absl::Duration kStopBudget = absl::Milliseconds(4800);

absl::StatusOr<kvindex::server::ServerOptions> OptionsFromFlags() {
  kvindex::server::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.tls = {.cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                 .key_file = absl::GetFlag(FLAGS_tls_key_file),
                 .client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file)};
  if (absl::Status tls = kvindex::server::CheckTlsFiles(options.tls); !tls.ok()) return tls;
  if (const std::string token_file = absl::GetFlag(FLAGS_auth_token_file); !token_file.empty()) {
    absl::StatusOr<kvindex::server::BearerAuth> auth =
        kvindex::server::BearerAuth::FromFile(token_file, absl::GetFlag(FLAGS_auth_all_rpcs));
    if (!auth.ok()) return auth.status();
    options.auth = *std::move(auth);
  } else if (absl::GetFlag(FLAGS_auth_all_rpcs)) {
    return absl::InvalidArgumentError("--auth_all_rpcs needs --auth_token_file");
  }
  if (absl::GetFlag(FLAGS_max_message_bytes) < 1024) {
    return absl::InvalidArgumentError("--max_message_bytes must be at least 1024");
  }
  if (absl::GetFlag(FLAGS_subscriber_threads) < 1) {
    return absl::InvalidArgumentError("--subscriber_threads must be at least 1");
  }
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.service.max_match_tokens = absl::GetFlag(FLAGS_max_match_tokens);
  options.service.hold_match = kvindex::server::MatchLatchFromFlags();  // empty unless a test asks
  options.index.max_blocks_per_worker = absl::GetFlag(FLAGS_max_blocks_per_worker);
  options.index.max_entries = absl::GetFlag(FLAGS_max_index_entries);
  options.index.speculative.max_entries = absl::GetFlag(FLAGS_max_speculative_entries);
  options.index.speculative.ttl = absl::GetFlag(FLAGS_speculative_ttl);
  options.index.speculative.ttl_min = absl::GetFlag(FLAGS_speculative_ttl_min);
  options.index.speculative.ttl_max = absl::GetFlag(FLAGS_speculative_ttl_max);
  options.index.speculative.default_block_size = absl::GetFlag(FLAGS_default_block_size);
  options.index = kvindex::WithMemoryBudget(options.index, absl::GetFlag(FLAGS_index_memory_mb) << 20);
  if (options.index.speculative.ttl <= absl::ZeroDuration() || options.index.speculative.ttl_min <= absl::ZeroDuration() ||
      options.index.speculative.ttl_max < options.index.speculative.ttl_min) {
    return absl::InvalidArgumentError(
        "--speculative_ttl and --speculative_ttl_min must be positive, --speculative_ttl_max at least the minimum");
  }
  if (options.index.speculative.default_block_size == 0) {
    return absl::InvalidArgumentError("--default_block_size must be at least 1");
  }
  options.manager.sync_enabled = absl::GetFlag(FLAGS_kv_event_sync);
  options.manager.io_threads = absl::GetFlag(FLAGS_subscriber_threads);
  options.manager.events_bind = absl::GetFlag(FLAGS_events_bind);
  options.manager.max_pods = absl::GetFlag(FLAGS_max_pods);
  absl::StatusOr<kvindex::ModelFilter> models = kvindex::ModelFilter::Create(absl::GetFlag(FLAGS_models));
  if (!models.ok()) return models.status();
  options.manager.models = *models;
  options.service.models = *std::move(models);
  if (absl::GetFlag(FLAGS_max_workers) != 0) options.manager.max_workers = absl::GetFlag(FLAGS_max_workers);
  if (absl::GetFlag(FLAGS_max_concurrent_replays) < 1) {
    return absl::InvalidArgumentError("--max_concurrent_replays must be at least 1");
  }
  options.manager.max_concurrent_replays = absl::GetFlag(FLAGS_max_concurrent_replays);
  options.snapshot.dir = absl::GetFlag(FLAGS_snapshot_dir);
  options.snapshot.interval = absl::GetFlag(FLAGS_snapshot_interval);
  if (options.snapshot.interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--snapshot_interval must be positive");
  }
  options.bootstrap.peer = absl::GetFlag(FLAGS_bootstrap_from);
  options.bootstrap.timeout = absl::GetFlag(FLAGS_bootstrap_timeout);
  if (options.bootstrap.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--bootstrap_timeout must be positive");
  }
  if (!options.bootstrap.peer.empty()) {
    options.bootstrap.token = options.auth.token();
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> peer_credentials =
        kvindex::server::MakePeerCredentials(options.tls, absl::GetFlag(FLAGS_bootstrap_ca_file));
    if (!peer_credentials.ok()) return peer_credentials.status();
    options.bootstrap.credentials = *std::move(peer_credentials);
  }
  if (const std::string pods_file = absl::GetFlag(FLAGS_pods_file); !pods_file.empty()) {
    absl::StatusOr<std::vector<kvindex::Pod>> pods = kvindex::server::LoadPodsFile(pods_file);
    if (!pods.ok()) return pods.status();
    options.initial_pods = *std::move(pods);
  }
  return options;
}

// "0.0.0.0:50051" with the port replaced by the bound one.
std::string BoundAddress(const std::string& listen, int port) {
  const size_t colon = listen.rfind(':');
  return absl::StrCat(colon == std::string::npos ? listen : listen.substr(0, colon), ":", port);
}

}  // namespace

int main(int argc, char** argv) {
  // SIGTERM/SIGINT are blocked in every thread (threads inherit the mask) and
  // taken synchronously by sigwait() below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // Debian builds Abseil with lock-order (deadlock) checking on: it records
  // every Mutex acquisition in a per-thread graph, ~18 % of a Match. Our lock
  // order is checked by the TSan suite instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // absl's --help exits 1 and lists flags under their build path; ours exits 0.
  if (kvindex::HelpRequested(argc, argv)) {
    std::fputs(kvindex::FlagsHelp(kUsage, {__FILE__}).c_str(), stdout);
    return 0;
  }
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return kvindex::server::IsFlagFileOf(file, __FILE__);
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  usage_config.version_string = [] { return std::string("kvindex-server 0.1.0\n"); };
  absl::SetFlagsUsageConfig(usage_config);
  // Precedence, lowest first: the seed's AIBRIX variable, KVINDEX_*, argv.
  kvindex::ManagerOptions seed_env;
  absl::Status env_status = kvindex::ApplyManagerEnv(&seed_env);
  absl::SetFlag(&FLAGS_kv_event_sync, seed_env.sync_enabled);
  env_status.Update(kvindex::server::ApplyEnvFlagFallbacks("KVINDEX_", __FILE__));
  if (!env_status.ok()) {
    std::fprintf(stderr, "kvindex-server: %s\n", std::string(env_status.message()).c_str());
    return 2;
  }
  // absl exits 1 on a bad flag; bad flags exit 2 (README).
  if (absl::Status flags = kvindex::server::CheckCommandLineFlags(argc, argv); !flags.ok()) {
    std::fprintf(stderr, "kvindex-server: %s\n", std::string(flags.message()).c_str());
    return 2;
  }
  absl::ParseCommandLine(argc, argv);

  spdlog::set_default_logger(spdlog::stderr_color_mt("kvindex-server"));
  const spdlog::level::level_enum level = spdlog::level::from_str(absl::GetFlag(FLAGS_log_level));
  if (level == spdlog::level::off && absl::GetFlag(FLAGS_log_level) != "off") {
    std::fprintf(stderr, "kvindex-server: unknown --log_level=%s\n", absl::GetFlag(FLAGS_log_level).c_str());
    return 2;
  }
  spdlog::set_level(level);

  absl::StatusOr<kvindex::server::ServerOptions> options = OptionsFromFlags();
  if (!options.ok()) {
    spdlog::critical("{}", options.status().ToString());
    return 2;
  }
  // Open files for every worker the server may follow, now rather than as a
  // late per-pod "Too many open files".
  const size_t max_workers = options->manager.max_workers;
  const size_t replays = options->manager.max_concurrent_replays;
  const size_t files_needed = kvindex::OpenFilesNeeded(max_workers, replays);
  const bool explicit_workers = absl::GetFlag(FLAGS_max_workers) != 0;
  if (absl::StatusOr<kvindex::OpenFilesLimit> files = kvindex::RaiseOpenFilesLimit(files_needed); !files.ok()) {
    spdlog::warn("open-files limit unknown ({}); --max_workers={} needs {}", files.status().ToString(), max_workers,
                 files_needed);
  } else if (const size_t fit = kvindex::WorkersThatFit(files->soft, replays); fit < max_workers && !explicit_workers) {
    spdlog::info("following at most {} workers: what the hard open-files limit ({}) allows; raise it (ulimit -Hn, "
                 "systemd LimitNOFILE=, docker --ulimit nofile=N:N) to follow up to {}",
                 fit, files->hard, max_workers);
    options->manager.max_workers = fit;
  } else if (fit < max_workers) {
    // Asked for explicitly: kept as far as the workers' sockets fit (one file
    // each); only a connected engine's TCP connection needs the second.
    const size_t sockets_fit = kvindex::WorkerSocketsThatFit(files->soft, replays);
    spdlog::error(
        "--max_workers={} needs {} open files when every engine is connected, but the hard open-files limit is {}: "
        "it carries {} connected workers; beyond them connections to engines fail (ZeroMQ retries them). Following "
        "at most {} workers (more pods are rejected, saying so). Raise the hard limit (ulimit -Hn; systemd "
        "LimitNOFILE=; docker run --ulimit nofile=N:N; the container runtime's default on Kubernetes)",
        max_workers, files_needed, files->hard, fit, std::min(max_workers, sockets_fit));
    options->manager.max_workers = std::min(max_workers, sockets_fit);
  }
  const bool tls = !options->tls.cert_file.empty();
  const bool mtls = !options->tls.client_ca_file.empty();
  const bool auth = options->auth.enabled();
  const std::string listen = options->listen;
  const std::string metrics_listen = options->metrics_listen;
  const size_t initial_pods = options->initial_pods.size();

  absl::StatusOr<std::unique_ptr<kvindex::server::KvIndexServer>> server =
      kvindex::server::KvIndexServer::Start(*std::move(options));
  if (!server.ok()) {
    spdlog::critical("cannot start: {}", server.status().ToString());
    return 1;
  }
  const std::string grpc_address = BoundAddress(listen, (*server)->port());
  const std::string metrics_url = (*server)->metrics_port() != 0
                                      ? absl::StrCat("http://", BoundAddress(metrics_listen, (*server)->metrics_port()),
                                                     "/metrics")
                                      : std::string("off");
  // Whatever --log_level says: with port 0 this is the only place the ports show.
  std::printf("kvindex-server: grpc %s, metrics %s\n", grpc_address.c_str(), metrics_url.c_str());
  std::fflush(stdout);
  spdlog::info("kvindex-server listening on {} ({}{}, {} pods from --pods_file, kv event sync {})", grpc_address,
               mtls ? "mTLS" : (tls ? "TLS" : "plaintext"), auth ? ", token required" : "", initial_pods,
               absl::GetFlag(FLAGS_kv_event_sync) ? "on" : "off");
  if ((*server)->metrics_port() != 0) {
    spdlog::info("metrics on {}", metrics_url);
  } else {
    spdlog::info("metrics endpoint disabled (--metrics_listen is empty)");
  }

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  spdlog::info("{} received: draining in-flight calls, then stopping", strsignal(signal_number));
  std::thread([] {
    absl::SleepFor(kStopBudget);
    spdlog::error("shutdown took longer than {}; exiting anyway", absl::FormatDuration(kStopBudget));
    spdlog::default_logger()->flush();
    std::_Exit(1);
  }).detach();
  (*server)->Shutdown(absl::Now() + kDrainTime);
  server->reset();
  spdlog::info("stopped");
  return 0;
}
