#pragma once

// ResumeBook: the workers restored from a snapshot (ManagerOptions::resume)
// that no subscription has taken yet. The first subscription of each takes its
// saved cursor when the pod it is subscribed under is the engine it was saved
// under (same subscription identity); otherwise its restored blocks must be
// dropped first. What Start does not take is dropped from the index.
//
// Thread safety: none; the SubscriptionManager calls it under its lock.

#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/index/prefix_index.h"
#include "core/index/worker_key.h"
#include "core/index/worker_snapshot.h"
#include "core/ingest/pod.h"
#include "core/ingest/worker_resume.h"

namespace kvindex {

class ResumeBook {
 public:
  explicit ResumeBook(const std::vector<WorkerResume>& saved);

  // Takes `worker`'s saved cursor for a subscription under (`pod`, `plan`):
  // nullopt when none was saved, or, with `stale` set, when it was saved
  // under another engine (its restored blocks are to be dropped). Logged.
  std::optional<BatchCursor> Take(const WorkerKey& worker, const Pod& pod, const PodPlan& plan, bool& stale);

  // Drops from `index` (when not null) the restored blocks of every saved
  // worker not taken, and forgets them. Logged.
  void DropUnused(PrefixIndex* index);

  bool empty() const { return saved_.empty(); }

 private:
  absl::flat_hash_map<WorkerKey, WorkerResume> saved_;
};

}  // namespace kvindex
