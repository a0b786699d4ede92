#pragma once

// WorkerSubscription: what the SubscriptionManager holds for one worker (a
// pod's dp rank) on its IoThread, and SubscriptionFactory, how it gets one.
// In production that is a Subscriber with real ZeroMQ sockets
// (ZmqSubscriptions()); the manager's tests inject factories of their own, so
// its pod rules and lifecycle are tested without sockets.
//
// Thread safety: a factory's Create and everything a WorkerSubscription does
// run on the worker's IoThread; a factory may be shared by every I/O thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/index/worker_key.h"
#include "core/ingest/ingest_metrics.h"
#include "core/ingest/internal/io_thread.h"
#include "core/ingest/internal/replay_slots.h"
#include "core/ingest/worker_status.h"
#include "zmq.hpp"

namespace kvindex {

// What to follow for one worker, and how.
struct SubscriberConfig {
  WorkerKey worker;
  WorkerContext context;
  std::string events_endpoint;  // "tcp://ip:port"; empty: bind mode (fed through OnLiveMessage)
  std::string replay_endpoint;  // "tcp://ip:port"; empty: the engine has no replay socket
  std::string topic;            // SUB prefix filter; empty: every topic
  absl::Duration replay_timeout = absl::Seconds(2);
  // The catch-up after the first replay (FeedOptions::catch_up_after).
  absl::Duration catch_up_after = absl::Seconds(1);
  size_t max_backlog = 100000;
  IngestMetrics* metrics = nullptr;  // not owned, outlives the subscriber; null: not reported
  // Restored from a snapshot: resume after this batch (FeedOptions::resume).
  std::optional<BatchCursor> resume;
  // The worker's I/O thread's replay slots (not owned, outlive the
  // subscription); null: replays are not limited.
  ReplaySlots* replay_slots = nullptr;
};

class WorkerSubscription : public IoTask {
 public:
  // Bind mode: one live message [seq, payload] routed to this worker.
  virtual void OnLiveMessage(uint64_t seq, std::string_view payload, absl::Time now) = 0;
};

class SubscriptionFactory {
 public:
  virtual ~SubscriptionFactory() = default;
  // Sets up the subscription `config` describes, feeding `index` (which
  // outlives it) and publishing its status to `status`. UNAVAILABLE when it
  // cannot be set up; `status` then says kFailed.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<WorkerSubscription>> Create(zmq::context_t& context,
                                                                     SubscriberConfig config, PrefixIndex* index,
                                                                     std::shared_ptr<WorkerStatusCell> status) = 0;
};

}  // namespace kvindex
