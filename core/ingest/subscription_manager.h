#pragma once

// SubscriptionManager: follows the pods the control plane describes, one ZMQ
// subscription per (pod, dp rank), feeding the PrefixIndex. The C++ successor of
// AIBrix's pkg/kvevent Manager (same lifecycle and pod rules, defects fixed).
//
// Thread safety: all calls may be made from any thread. Upsert/Delete never
// wait for sockets of other pods.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/ingest/ingest_metrics.h"
#include "core/ingest/model_filter.h"
#include "core/ingest/pod.h"
#include "core/ingest/worker_capacity.h"
#include "core/ingest/worker_resume.h"
#include "core/ingest/worker_status.h"  // WorkerState, WorkerStateName, WorkerStatus

namespace kvindex {

class SubscriptionFactory;  // core/ingest/internal/worker_subscription.h

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
  // A worker's catch-up replay this long after its first replay (README
  // "Replay timeouts"; InfiniteDuration: none).
  absl::Duration catch_up_after = absl::Seconds(1);
  // Bind mode: e.g. "tcp://*:5557"; empty: none. When set, engines connect their
  // PUB sockets here and every pod is fed by topic kv@<ip>[:<port>]@<model>
  // instead of a SUB connected to the pod (replay still connects to the pod).
  std::string events_bind;
  size_t max_pods = 10000;
  // The models this replica follows (--models); a pod of another model is
  // ignored, saying why.
  ModelFilter models;
  // Most workers (pod, dp rank) subscribed at once: a pod that would go past it
  // is rejected, saying so. The ZeroMQ context is sized for it; the process's
  // open-files limit must allow OpenFilesNeeded(max_workers, max_concurrent_replays).
  size_t max_workers = 10000;
  // Most replays out at once (each holds a DEALER: two open files, for up to
  // replay_timeout when its engine is down), shared out among the I/O
  // threads; further replays wait for a slot, those of workers whose engine
  // has been heard from first.
  size_t max_concurrent_replays = 512;
  PodLimits pod_limits;
  size_t max_backlog = 100000;           // live batches held per worker while it replays
  // Where ingestion is reported as it happens (events, gaps, replays, ...); not
  // owned, must outlive the manager. null: not reported.
  IngestMetrics* metrics = nullptr;
  // Tests: runs on a pod's I/O thread just before its blocks are dropped (and
  // may block there, to hold a removal up). Empty in production.
  std::function<void(std::string_view pod)> before_removal;
  // Tests: makes each worker's subscription (the manager's own tests inject
  // fakes without sockets); must outlive the manager. null: Subscribers with
  // real ZeroMQ sockets.
  SubscriptionFactory* subscription_factory = nullptr;
  // Workers restored from a snapshot into the provider's index before Start.
  // The first subscription of each resumes its engine's stream after the
  // saved batch when its pod is the same engine as when saved (same
  // subscription identity); otherwise, and for every saved worker Start does
  // not subscribe, the restored blocks are dropped first. Used once, at Start.
  std::vector<WorkerResume> resume;
};


// Totals for GetStats and metrics.
struct ManagerStats {
  uint64_t pods = 0;             // known pods
  uint64_t subscribed_pods = 0;
  uint64_t workers = 0;          // subscribed (pod, dp rank) pairs
  std::string events_bind_endpoint;  // bind mode: the endpoint actually bound (port resolved)
  uint64_t bind_messages = 0;         // bind mode: messages routed to a worker
  uint64_t bind_unknown_senders = 0;  // bind mode: messages whose topic names no known pod/rank
  uint64_t bind_bad_frames = 0;       // bind mode: messages not [topic, seq8, payload]
  uint64_t removals_pending = 0;      // removals acked kRemovalPending (not done within subscribe_timeout)
};

// What an Upsert/Delete did:
//  kSubscribed: a new subscription was set up (reason empty, or says it is still being set up);
//  kUpdated:    a known, subscribed pod changed: "resubscribed: <fields> changed" (old blocks
//               dropped) or "no subscription change";
//  kRemoved:    the pod was forgotten, its subscription and blocks dropped;
//  kRemovalPending: the pod was forgotten and unsubscribed, but its blocks were still being
//               dropped when subscribe_timeout passed: a Match may name it until that ends
//               (on its own); counted in ManagerStats::removals_pending;
//  kIgnored:    recorded but not subscribed, reason = why (a PlanPod reason, "kv event sync
//               disabled", "recorded; subscribed when the manager starts", "unsubscribed: ...")
//               or the call came after Stop ("manager stopped") / named an unknown pod;
//  kRejected:   invalid pod (ValidatePod's message), too many pods, or its sockets failed.
enum class PodOutcome { kSubscribed, kUpdated, kRemoved, kIgnored, kRejected, kRemovalPending };

// Lower-case name: "subscribed", "updated", ...
std::string_view PodOutcomeName(PodOutcome outcome);

struct PodAck {
  std::string pod;  // "namespace/name"
  PodOutcome outcome = PodOutcome::kIgnored;
  std::string reason;
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
  // With sync disabled returns OK at once. CANCELLED when Stop() interrupts it;
  // FAILED_PRECONDITION when already started or stopped; the bind endpoint's
  // error when events_bind cannot be bound.
  [[nodiscard]] absl::Status Start();

  // Cancels everything and joins every thread. Idempotent. Later pod calls are ignored.
  void Stop();

  // Adds or updates a pod. Invalid pods are rejected with the reason. Waits (at
  // most subscribe_timeout) only for this pod's own sockets to be set up.
  PodAck Upsert(const Pod& pod);

  // Forgets a pod: unsubscribes and drops its blocks (on the pod's I/O thread,
  // after its sockets are closed, so no batch of it lands later). Waits (at
  // most subscribe_timeout) until they are dropped: once acked kRemoved, the
  // pod no longer matches; kRemovalPending when the wait ran out first. An
  // Upsert that unsubscribes a pod waits the same way (its reason says so
  // when the wait ran out).
  PodAck Delete(std::string_view pod_key);

  // Replaces the known set: upserts every pod, deletes the known ones missing
  // (waiting for all of their sockets and removals together).
  // Acks: one per given pod in order, then one kRemoved (or kRemovalPending) per deleted pod.
  std::vector<PodAck> ApplySnapshot(const std::vector<Pod>& pods);

  // Every known pod, ordered by key.
  std::vector<PodStatus> ListPods() const;
  // The first `limit` known pods whose key is greater than `after` (every one
  // after it when `limit` is 0), ordered by key.
  std::vector<PodStatus> ListPods(std::string_view after, size_t limit) const;
  // The known pod keyed `key` ("namespace/name"); nullopt when unknown.
  std::optional<PodStatus> FindPod(std::string_view key) const;

  ManagerStats GetStats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvindex
