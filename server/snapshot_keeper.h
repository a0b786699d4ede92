#pragma once

// SnapshotKeeper: kvindex-server's side of snapshots (README "Snapshots",
// core/snapshot/index_snapshot.h). Load() restores the directory's snapshot
// into the index before the subscriptions start; Start() writes one every
// interval on a thread of its own; WriteFinal() writes the last one at
// SIGTERM when it fits the time left. Every write and load is reported to
// the metrics (kvindex_snapshot_*) and logged in one line.
//
// Thread safety: Load, Start, Stop and WriteFinal are called by the server's
// owner thread, in that order (Stop before WriteFinal); the timer thread only
// writes. The index and manager must outlive the keeper.

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/ingest/subscription_manager.h"
#include "core/snapshot/index_snapshot.h"
#include "server/kvindex_metrics.h"

namespace kvindex::server {

struct SnapshotOptions {
  std::string dir;  // --snapshot_dir; empty: no snapshots
  absl::Duration interval = absl::Seconds(60);  // --snapshot_interval
};

class SnapshotKeeper {
 public:
  SnapshotKeeper(SnapshotOptions options, PrefixIndex* index, const SubscriptionManager* pods,
                 KvIndexMetrics* metrics);
  ~SnapshotKeeper();  // Stop()s
  SnapshotKeeper(const SnapshotKeeper&) = delete;
  SnapshotKeeper& operator=(const SnapshotKeeper&) = delete;

  // Loads the snapshot of options.dir into the (empty) index, before the
  // subscriptions start; whatever the outcome, the server can start (cold
  // when not kLoaded). Reports to `metrics` and logs one line.
  static SnapshotLoad Load(const SnapshotOptions& options, PrefixIndex* index, KvIndexMetrics* metrics);

  // Starts the timer thread: a snapshot every interval.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  // Stops and joins it (a write in progress finishes first). Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // The shutdown snapshot, abandoned at `deadline` (the previous one stays);
  // skipped when the last write took longer than the time left.
  void WriteFinal(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Writes one snapshot and reports it; false when it failed.
  bool Write(absl::Time deadline, const char* why) ABSL_LOCKS_EXCLUDED(mu_);
  void Run() ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction.
  const SnapshotOptions options_;
  PrefixIndex* const index_;
  const SubscriptionManager* const pods_;
  KvIndexMetrics* const metrics_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration last_write_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();  // duration of the last write

  std::thread thread_;  // owner thread only
};

}  // namespace kvindex::server
