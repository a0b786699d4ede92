#pragma once

// Matcher: answers PrefixIndex::Match. It hashes the query's blocks in each
// block size the (model, LoRA) is stored in (ContextRegistry), walks them
// through the BlockTable keeping each holder's contiguous run from block 0,
// scores each run by the media holding its blocks, and names the workers
// (WorkerDirectory). A hybrid model's worker (several KV cache groups, each
// a holder) gets the longest hit every group accepts by vLLM's rule for its
// kind (kv_cache_group.h): bounded by its full-attention groups' runs, then
// checked downwards against the blocks the other groups need, so it looks
// only at a few blocks past the walk. Speculative entries (SpeculativeTable),
// when any exist and SPECULATIVE does not weigh 0, are merged into each
// block's holders as the tier SPECULATIVE, never over a confirmed holder; with
// none, the walk is the same code as without them. It has no state and no lock
// of its own.
//
// Thread safety: Match may be called from any thread, concurrently with
// everything else. It holds the locks of one part at a time (lock_order.h):
// the directory's and the registry's to start, then shard locks as reader,
// each taken once per walk and kept until the walk ends (ReaderLockSet: it
// never waits while holding one), then the directory's again to name the
// workers. So it sees a worker's batch being applied shard by shard and never
// waits for a whole batch; a writer waits for a walk at most until it ends.

#include "absl/status/statusor.h"
#include "core/index/internal/block_table.h"
#include "core/index/internal/context_registry.h"
#include "core/index/internal/medium_table.h"
#include "core/index/internal/speculative_table.h"
#include "core/index/internal/worker_directory.h"
#include "core/index/prefix_index.h"

namespace kvindex {

class Matcher {
 public:
  // Each must outlive the Matcher; `speculative` may be null (no hints).
  Matcher(const BlockTable& table, const WorkerDirectory& workers, const ContextRegistry& contexts,
          const MediumTable& media, const SpeculativeTable* speculative = nullptr)
      : table_(table), workers_(workers), contexts_(contexts), media_(media), speculative_(speculative) {}

  // See PrefixIndex::Match.
  absl::StatusOr<MatchResult> Match(const MatchQuery& query) const;

 private:
  const BlockTable& table_;
  const WorkerDirectory& workers_;
  const ContextRegistry& contexts_;
  const MediumTable& media_;
  const SpeculativeTable* const speculative_;
};

}  // namespace kvindex
