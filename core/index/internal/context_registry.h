#pragma once

// ContextRegistry: the contexts some worker stores into — a context is a
// (model, LoRA, block size), one namespace of chain hashes (block_hash.h) — so
// Match knows which block sizes to hash a (model, LoRA) query with. It counts
// the workers using each context and forgets a context nobody uses.
//
// Invariant: the count of a context is the number of workers whose own set of
// contexts (WorkerBlocks) holds it. A worker changes its set and these counts
// together, under its WorkerLock, which Use and Release therefore require.
//
// Thread safety: every call may be made from any thread. Lock order:
// lock_order.h (ContextsLock, after the worker's).

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "core/index/internal/lock_order.h"

namespace kvindex {

// (model, lora, block size).
using ContextKey = std::tuple<std::string, std::string, uint32_t>;
using ContextSet = absl::flat_hash_set<ContextKey>;

class ContextRegistry {
 public:
  ContextRegistry() = default;
  ContextRegistry(const ContextRegistry&) = delete;
  ContextRegistry& operator=(const ContextRegistry&) = delete;

  // One more worker, the one holding `worker`, uses `context`: it has just
  // added `context` to its set.
  void Use(const ContextKey& context, const WorkerLock& worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(worker.mu)
      ABSL_LOCKS_EXCLUDED(lock_.mu);

  // The worker holding `worker` uses none of `contexts` (its whole set, each
  // Use()d once) any more.
  void Release(const ContextSet& contexts, const WorkerLock& worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(worker.mu)
      ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Block sizes in use for (model, lora), ascending; empty when none.
  std::vector<uint32_t> BlockSizes(std::string_view model, std::string_view lora) const ABSL_LOCKS_EXCLUDED(lock_.mu);

 private:
  ContextsLock lock_;
  // (model, lora) -> block size -> number of workers using it (never 0).
  std::map<std::pair<std::string, std::string>, std::map<uint32_t, uint32_t>, std::less<>> contexts_
      ABSL_GUARDED_BY(lock_.mu);
};

}  // namespace kvindex
