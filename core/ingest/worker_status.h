#pragma once

// WorkerStatus: what one subscription (a pod's dp rank) reports for ListPods
// and metrics. WorkerStatusCell shares it between the I/O thread that updates
// it and the threads that read it.

#include <cstdint>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvindex {

// kConnecting: sockets created, no engine connected yet; kLive: connected or
// receiving; kReplaying: a replay request is outstanding; kFailed: the sockets
// could not be set up (see the pod's ack).
enum class WorkerState { kConnecting, kLive, kReplaying, kFailed };

// Lower-case name: "connecting", "live", "replaying", "failed".
std::string_view WorkerStateName(WorkerState state);

struct WorkerStatus {
  uint32_t dp_rank = 0;
  WorkerState state = WorkerState::kConnecting;
  int64_t last_seq = -1;        // last engine seq applied (or skipped as undecodable)
  uint64_t batches = 0;         // batches applied to the index
  uint64_t events = 0;          // events in those batches
  uint64_t decode_errors = 0;   // payloads DecodeEventBatch rejected (seq consumed, nothing applied)
  uint64_t bad_frames = 0;      // messages not shaped [topic, seq8, payload] (or a replay reply form)
  uint64_t gaps = 0;            // seq jumps detected (seq > last + 1)
  uint64_t replays_ok = 0;      // replays that covered what was asked
  uint64_t replays_failed = 0;  // replays that timed out, fell short or were not answered
  uint64_t restarts = 0;        // engine restarts (live seq went backwards); worker cleared each time
  double last_event_ts = 0;     // engine ts of the last applied batch
  uint64_t duplicates = 0;      // batches skipped because their seq was already applied
  uint64_t uncovered_gaps = 0;  // gaps no replay could cover; worker cleared each time
  uint64_t dropped = 0;         // live batches dropped because the replay backlog was full

  bool operator==(const WorkerStatus&) const = default;
};

// A WorkerStatus behind a mutex. Written by the worker's I/O thread, read by anyone.
class WorkerStatusCell {
 public:
  explicit WorkerStatusCell(uint32_t dp_rank) { status_.dp_rank = dp_rank; }

  WorkerStatus Get() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  void Set(const WorkerStatus& status) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    status_ = status;
  }

 private:
  mutable absl::Mutex mu_;
  WorkerStatus status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvindex
