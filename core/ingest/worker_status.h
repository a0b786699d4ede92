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

// Every counter of a WorkerStatus, in one list: X(name, help). ListPods shows
// each (WorkerInfo.<name>), GetStats sums them (GetStatsResponse.<name>).
// clang-format off
#define KVINDEX_WORKER_COUNTERS(X)                                                                     \
  X(batches, "batches applied to the index")                                                           \
  X(events, "events in those batches")                                                                 \
  X(decode_errors, "payloads DecodeEventBatch rejected (seq consumed, nothing applied)")               \
  X(bad_frames, "messages not shaped [topic, seq8, payload] (or a replay reply form)")                 \
  X(gaps, "seq jumps detected (seq > last + 1)")                                                       \
  X(replays_ok, "replays that covered what was asked")                                                 \
  X(replays_failed, "replays that timed out, fell short or were not answered")                         \
  X(restarts, "engine restarts (live seq went backwards); worker cleared each time")                   \
  X(duplicates, "batches skipped because their seq was already applied")                               \
  X(uncovered_gaps, "gaps no replay could cover; worker cleared each time")                            \
  X(dropped, "live batches dropped because the replay backlog was full")                               \
  X(unknown_removals, "removed block hashes the worker did not hold")                                  \
  X(blocks_unindexed, "stored blocks not indexed: their parent was unknown")                           \
  X(unknown_chunks, "offloaded chunks (no tokens) naming a block the worker did not hold")
// clang-format on

struct WorkerStatus {
  uint32_t dp_rank = 0;
  WorkerState state = WorkerState::kConnecting;
  int64_t last_seq = -1;     // last engine seq applied (or skipped as undecodable)
  double last_event_ts = 0;  // engine ts of the last applied batch
  // False while the index may lack blocks the engine stored before kvindex
  // followed it: the stream's first batch seen was not seq 0 (the engine's
  // replay buffer no longer held the start), or a gap no replay covered
  // cleared the worker. True again once known complete: a stream seen from
  // seq 0 (an engine restart), or an AllBlocksCleared applied.
  bool history_complete = true;
#define KVINDEX_WORKER_COUNTER_MEMBER(name, help) uint64_t name = 0;
  KVINDEX_WORKER_COUNTERS(KVINDEX_WORKER_COUNTER_MEMBER)
#undef KVINDEX_WORKER_COUNTER_MEMBER

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
