#pragma once

// SubscriptionManager: follows the pods the control plane describes, one ZMQ
// subscription per (pod, dp rank), feeding the PrefixIndex. The C++ successor of
// AIBrix's pkg/kvevent Manager (same lifecycle and pod rules, defects fixed).
//
// Thread safety: all calls may be made from any thread. Upsert/Delete never
// wait for sockets of other pods.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/pod.h"
#include "core/prefix_index.h"

namespace kvindex {

// Returns the index once it is ready, nullptr before (the seed's "index provider").
class IndexProvider {
 public:
  virtual ~IndexProvider() = default;
  virtual PrefixIndex* GetIndex() = 0;
};

struct ManagerOptions {
  bool sync_enabled = true;              // false: pods are recorded, never subscribed
  int io_threads = 2;                    // subscriber I/O threads
  absl::Duration provider_poll = absl::Seconds(1);
  absl::Duration provider_timeout = absl::Seconds(30);
  absl::Duration subscribe_timeout = absl::Seconds(5);
  absl::Duration replay_timeout = absl::Seconds(2);
  std::string events_bind;               // e.g. "tcp://*:5557"; empty: no bind mode
  size_t max_pods = 10000;
  PodLimits pod_limits;
};

enum class PodOutcome { kSubscribed, kUpdated, kRemoved, kIgnored, kRejected };

// Lower-case name: "subscribed", "updated", ...
std::string_view PodOutcomeName(PodOutcome outcome);

struct PodAck {
  std::string pod;  // "namespace/name"
  PodOutcome outcome = PodOutcome::kIgnored;
  std::string reason;
};

enum class WorkerState { kConnecting, kLive, kReplaying, kFailed };
std::string_view WorkerStateName(WorkerState state);

struct WorkerStatus {
  uint32_t dp_rank = 0;
  WorkerState state = WorkerState::kConnecting;
  int64_t last_seq = -1;
  uint64_t batches = 0;
  uint64_t events = 0;
  uint64_t decode_errors = 0;
  uint64_t bad_frames = 0;
  uint64_t gaps = 0;
  uint64_t replays_ok = 0;
  uint64_t replays_failed = 0;
  uint64_t restarts = 0;
  double last_event_ts = 0;
};

struct PodStatus {
  Pod pod;
  PodPlan plan;                       // subscribable, or why not
  bool subscribed = false;
  std::vector<WorkerStatus> workers;  // one per dp rank while subscribed
};

class SubscriptionManager {
 public:
  SubscriptionManager(IndexProvider* provider, ManagerOptions options);
  ~SubscriptionManager();  // Stop()s
  SubscriptionManager(const SubscriptionManager&) = delete;
  SubscriptionManager& operator=(const SubscriptionManager&) = delete;

  // Waits for the provider's index (poll, give up with DEADLINE_EXCEEDED), then
  // subscribes every known subscribable pod; one failure does not stop the others.
  absl::Status Start();

  // Cancels everything and joins every thread. Idempotent. Later pod calls are ignored.
  void Stop();

  // Adds or updates a pod. Invalid pods are rejected with the reason.
  PodAck Upsert(const Pod& pod);

  // Forgets a pod: unsubscribes and drops its blocks.
  PodAck Delete(std::string_view pod_key);

  // Replaces the known set: upserts every pod, deletes the known ones missing.
  std::vector<PodAck> ApplySnapshot(const std::vector<Pod>& pods);

  // Every known pod, ordered by key.
  std::vector<PodStatus> ListPods() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvindex
