#pragma once

// WorkerDirectory: the workers the index knows, by key, by id and by pod. A
// worker's id (< 2^28: a holder id adds its group's slot, kv_cache_group.h)
// is assigned when it is created, in order, and never reused: the
// block table and Match name workers by id, and an id that no longer
// resolves is a worker removed meanwhile.
//
// Workers are handed out as shared_ptr: one removed from the directory stays
// valid for whoever still holds it (an Apply in flight sees it Remove()d).
//
// Thread safety: every call may be made from any thread. The directory's lock
// is the first in the order (lock_order.h) and nothing is acquired under it:
// calls that run a caller's function under it (FindOrCreate's factory,
// Resolve's callback) require that function to take no lock.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/types/span.h"
#include "core/index/internal/lock_order.h"
#include "core/index/internal/worker_blocks.h"
#include "core/index/worker_key.h"

namespace kvindex {

class WorkerDirectory {
 public:
  WorkerDirectory() = default;
  WorkerDirectory(const WorkerDirectory&) = delete;
  WorkerDirectory& operator=(const WorkerDirectory&) = delete;

  // The worker with `key`; nullptr when unknown.
  std::shared_ptr<WorkerBlocks> Find(const WorkerKey& key) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // The worker with `key`, created by make(id) when unknown; `make` runs
  // under the directory's lock and must take no lock.
  std::shared_ptr<WorkerBlocks> FindOrCreate(const WorkerKey& key,
                                             absl::FunctionRef<std::shared_ptr<WorkerBlocks>(uint32_t id)> make)
      ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Takes the worker with `key` out of the directory and returns it; nullptr
  // when unknown.
  std::shared_ptr<WorkerBlocks> Remove(const WorkerKey& key) ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Keys of the workers (dp ranks) of `pod`, in order of creation.
  std::vector<WorkerKey> KeysOfPod(std::string_view pod) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Ids of the workers of `pods`, ascending (a pod named twice, twice).
  std::vector<uint32_t> IdsOfPods(absl::Span<const std::string> pods) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Every worker, in no particular order.
  std::vector<std::shared_ptr<WorkerBlocks>> All() const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // The worker with the most live() blocks (the victim of the global cap);
  // nullptr when none holds any.
  std::shared_ptr<WorkerBlocks> Largest() const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Calls fn(i, worker) for each i whose ids[i] names a known worker (an id
  // that does not is skipped), under the directory's reader lock; fn must
  // take no lock and keep no reference to the worker.
  void Resolve(absl::Span<const uint32_t> ids, absl::FunctionRef<void(size_t i, const WorkerBlocks& worker)> fn) const
      ABSL_LOCKS_EXCLUDED(lock_.mu);

 private:
  DirectoryLock lock_;
  absl::flat_hash_map<WorkerKey, std::shared_ptr<WorkerBlocks>> by_key_ ABSL_GUARDED_BY(lock_.mu);
  absl::flat_hash_map<uint32_t, std::shared_ptr<WorkerBlocks>> by_id_ ABSL_GUARDED_BY(lock_.mu);
  absl::flat_hash_map<std::string, std::vector<uint32_t>> by_pod_ ABSL_GUARDED_BY(lock_.mu);
  uint32_t next_id_ ABSL_GUARDED_BY(lock_.mu) = 0;
};

}  // namespace kvindex
