#pragma once

// LagProbe: measures event lag, engine batch ts -> visible in Match, the way a
// gateway would see it. It is one more simulated engine pod (the sim's
// Workload, EngineCache, payload encoder and Publisher), publishing the same
// traffic at the same rate as the kvindex-sim pods around it, so it queues
// behind the same load in the server. Once probing is on, the batches it
// publishes carry a probe as well: a prompt of `probe_blocks` fresh blocks.
// The batch's ts is taken just before it is encoded and sent (as
// SimEngine does). A poller thread calls Match for the probe's tokens on its
// own connection in a tight loop, starting `probe_lead` before the batch goes
// out (so the connection and both processes are awake, as under a gateway's
// steady traffic) and ending when the probe pod holds all of them.
//
// Each probe yields an interval: the lag is at most (reply of the first
// Match that saw it) - ts and at least (send of the last Match that did not,
// if sent after ts) - ts. Polling resolution is one Match round trip
// (recorded for the polls sent after ts). One probe is outstanding at a time;
// a probe not visible within `visible_timeout` is counted as lost.
//
// Thread safety: Start/StartProbing/Stop from one thread.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "kvindex/v1/kvindex.grpc.pb.h"
#include "tools/sim/engine_cache.h"
#include "tools/sim/publisher.h"
#include "tools/sim/workload.h"
#include "zmq.hpp"

namespace kvindex::bench {

struct LagProbeOptions {
  std::string ns = "ingest";
  std::string name = "probe-0";
  std::string model = "sim-model";
  sim::WorkloadOptions workload;   // filler traffic, as the kvindex-sim pods'
  sim::EngineCacheOptions cache;   // model, block size, capacity
  double rate = 10;                // filler requests per second
  size_t requests_per_batch = 1;
  uint32_t probe_blocks = 4;       // fresh blocks per probe
  absl::Duration probe_lead = absl::Milliseconds(2);  // polling starts this long before the probe batch
  absl::Duration visible_timeout = absl::Seconds(2);
  // Least time between the sends of two polls; zero: a tight loop. A gap
  // leaves the server (and the machine) more room at the cost of resolution.
  absl::Duration poll_interval = absl::ZeroDuration();
  std::string token;               // bearer token of the Match calls
};

struct LagResult {
  uint64_t probes = 0;                  // probes published
  uint64_t lost = 0;                    // not visible within visible_timeout
  std::vector<int64_t> lag_upper_ns;    // per visible probe: first seeing reply - ts
  std::vector<int64_t> lag_lower_ns;    // per visible probe: last missing send - ts (0 if none)
  std::vector<int64_t> poll_rtt_ns;     // Match round trips of polls sent after a probe's ts
  uint64_t polls = 0;                   // every poll, those before ts included
  uint64_t poll_errors = 0;
  uint64_t batches = 0;                 // batches the probe pod published (filler included)
  uint64_t blocks_stored = 0;
};

class LagProbe {
 public:
  // Binds the probe pod's PUB and replay sockets on 127.0.0.1 (ephemeral ports).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LagProbe>> Create(LagProbeOptions options,
                                                          std::shared_ptr<grpc::Channel> match_channel);
  ~LagProbe();  // Stop()
  LagProbe(const LagProbe&) = delete;
  LagProbe& operator=(const LagProbe&) = delete;

  // The pod to push to the server (kv events enabled, model label, ports).
  v1::Pod pod() const;
  std::string pod_key() const { return options_.ns + "/" + options_.name; }

  // Starts the filler traffic (and the replay service).
  void Start();
  // From now on, batches carry probes.
  void StartProbing() { probing_.store(true); }
  void StopProbing() { probing_.store(false); }
  // Stops both threads. Idempotent.
  void Stop();

  // What was measured; call after Stop().
  LagResult result() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  LagProbe(LagProbeOptions options, std::unique_ptr<zmq::context_t> context,
           std::unique_ptr<sim::Publisher> publisher, std::shared_ptr<grpc::Channel> match_channel);
  void Publish(std::stop_token stop);
  void Poll(std::stop_token stop);

  const LagProbeOptions options_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<sim::Publisher> publisher_;  // publisher thread only
  std::unique_ptr<v1::KvIndex::Stub> stub_;
  sim::Workload workload_;                     // publisher thread only
  sim::EngineCache cache_;                     // publisher thread only
  std::atomic<bool> probing_{false};
  std::atomic<bool> poller_idle_{true};
  std::jthread publisher_thread_;
  std::jthread poller_thread_;

  mutable absl::Mutex mu_;
  // Probe handed to the poller: its tokens, then (once published) its ts.
  std::optional<std::vector<uint32_t>> pending_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> probe_ts_ns_{0};  // unix ns of the armed probe's batch ts; 0: not published yet
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  LagResult result_ ABSL_GUARDED_BY(mu_);
};

// Mean full blocks per prompt of a Workload without system prompts and with
// max_turns 1: prompts are U[(t+1)/2, t + t/2] tokens.
double MeanBlocksPerRequest(uint32_t turn_tokens, uint32_t block_size);

}  // namespace kvindex::bench
