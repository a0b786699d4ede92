#pragma once

// IoThreads: the ZeroMQ context and the I/O threads every subscription lives
// on, sized for the workers to follow, and the bind-mode receiver on thread 0
// when kvindex has a bind endpoint. Started by the SubscriptionManager.
//
// Thread safety: Start and Stop from one thread (the manager's); the members
// are then shared as the manager's header says.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/ingest/internal/bind_receiver.h"
#include "core/ingest/internal/io_thread.h"
#include "core/ingest/internal/replay_slots.h"
#include "zmq.hpp"

namespace kvindex {

// Task ids on the I/O threads: tasks are destroyed newest (highest id) first,
// so the bind receiver outlives every worker's.
inline constexpr uint64_t kBindReceiverTask = 0;  // on thread 0
inline constexpr uint64_t kFirstWorkerTask = 1;

struct IoThreads {
  std::unique_ptr<zmq::context_t> context;
  std::vector<std::unique_ptr<IoThread>> threads;  // at least one
  // threads[i]'s replay slots (used on that thread only): max_replays shared
  // out, at least one each.
  std::vector<std::unique_ptr<ReplaySlots>> replay_slots;
  BindReceiver* bind_receiver = nullptr;           // owned by threads[0]; null without a bind endpoint
  std::string bind_endpoint;                       // as bound (port resolved)

  // Starts `threads` I/O threads (clamped to 1..64) on a context sized for
  // `max_workers` with up to `max_replays` replays out at once, and binds
  // `events_bind` (empty: no bind mode), counting its messages in `counters`
  // (which must outlive the threads). The bind endpoint's error
  // (INVALID_ARGUMENT, UNAVAILABLE) when it cannot bind.
  [[nodiscard]] static absl::StatusOr<IoThreads> Start(int threads, size_t max_workers, size_t max_replays,
                                                       const std::string& events_bind, BindCounters* counters);

  // Stops every thread (running what was posted, closing every socket), then
  // drops the replay slots and terminates the context. Idempotent.
  void Stop();
};

}  // namespace kvindex
