#pragma once

// WorkerBlocks: one worker's engine blocks — engine hash -> (index hash X,
// media, parent), an EngineMap with leaves-first eviction — and everything that
// follows from them: the worker's holders in the BlockTable (queued as
// HolderUpdates, with its aliases), the contexts it uses in the
// ContextRegistry, its per-medium counts, its stats and its cap.
//
// A hybrid model's worker holds one such set per KV cache group (its events
// name the group; kv_cache_group.h): engine hashes are per group (groups of
// one block size send the same hashes), each group is a holder of its own in
// the BlockTable, and a removal touches only its group.
//
// Applying an event turns each engine block into its X (the chain hash of its
// tokens from its parent's X, or from the context's seed) and queues the
// holder updates that follow; every call that changes the blocks ends by
// carrying them out and publishing the block count (live(), and the change to
// IndexCounters::entries), once per call rather than per block: atomics are
// costly on the ingestion path.
//
// Speculative entries (routing hints) live in the SpeculativeTable, never in
// the worker's EngineMap; the worker writes them (Speculate) and, as it
// applies events, confirms those its engine stores and drops those it
// removes, clears or forgets — under its lock, so a hint and a batch of one
// worker never interleave. A worker with no entry pays one relaxed load per
// Apply for this.
//
// Thread safety: every call may be made from any thread. Calls on one worker
// are serialized by its WorkerLock; different workers run in parallel.
// Export holds that lock in bounded steps, and runs one at a time per worker
// (its ExportLock). id(), key(), block_size() and live() take no lock (Match
// and the global cap read them). Lock order: lock_order.h (ExportLock, then
// WorkerLock, then the registry's and the shards' locks, taken inside).

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/container/flat_hash_map.h"
#include "core/events/event_batch.h"
#include "core/index/internal/block_table.h"
#include "core/index/internal/context_registry.h"
#include "core/index/internal/engine_map.h"
#include "core/index/internal/kv_cache_group.h"
#include "core/index/internal/lock_order.h"
#include "core/index/internal/medium_table.h"
#include "core/index/internal/speculative_table.h"
#include "core/index/prefix_index.h"
#include "core/index/worker_key.h"
#include "core/index/worker_snapshot.h"

namespace kvindex {

// Totals over every worker, for IndexStats (relaxed atomics: counts, not synchronization).
struct IndexCounters {
  std::atomic<uint64_t> entries{0};    // (engine block, worker) entries
  std::atomic<uint64_t> evictions{0};  // by either cap
  std::atomic<uint64_t> unresolved_parents{0};
};

// How much one hold of the worker's lock does in WorkerBlocks::Export (tests
// make them small to interleave more).
struct ExportSteps {
  size_t positions = 65536;  // table positions copied per hold (step 2)
};

class WorkerBlocks {
 public:
  // What a worker updates besides itself; each must outlive it.
  struct Shared {
    BlockTable& table;
    ContextRegistry& contexts;
    MediumTable& media;
    IndexCounters& counters;
    SpeculativeTable* speculative = nullptr;  // null: routing hints are not kept
  };

  WorkerBlocks(uint32_t id, WorkerKey key, const Shared& shared);
  WorkerBlocks(const WorkerBlocks&) = delete;
  WorkerBlocks& operator=(const WorkerBlocks&) = delete;

  uint32_t id() const { return id_; }
  const WorkerKey& key() const { return key_; }
  // Block size of the last event stored with tokens; 0 before any.
  uint32_t block_size() const { return block_size_.load(std::memory_order_relaxed); }
  // Block size of the last routing hint recorded; 0 before any.
  uint32_t hint_block_size() const { return hint_block_size_.load(std::memory_order_relaxed); }
  // Blocks held as of the last completed call, over every group (the
  // worker's entries in the index).
  uint64_t live() const { return live_.load(std::memory_order_relaxed); }

  // The worker's groups as of the last completed call, by slot (see
  // kv_cache_group.h); size 0 before any block, 1 for a single-group model.
  struct Layout {
    uint32_t groups = 0;
    std::array<GroupShape, kMaxGroupsPerWorker> shapes;
  };
  Layout GroupLayout() const;
  // GroupLayout().groups, without the copy.
  uint32_t group_count() const { return group_count_.load(std::memory_order_acquire); }

  // Applies the events of `batch` in order, with the worker's model and
  // default LoRA from `context`, then evicts down to `max_blocks` (0: no cap);
  // records `cursor` (when given) with the result. Once Remove()d: applies
  // nothing and says worker_removed.
  [[nodiscard]] ApplyResult Apply(const WorkerContext& context, const EventBatch& batch, size_t max_blocks,
                                  const std::optional<BatchCursor>& cursor = std::nullopt)
      ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Records a routing hint of `model`: each X of `xs` (hashed in `context`)
  // the worker holds in no group becomes or stays a speculative entry with
  // `deadline` (SpeculativeTable::Record). Returns how many; 0 once Remove()d
  // or without a SpeculativeTable.
  uint32_t Speculate(std::string_view model, const ContextKey& context, absl::Span<const uint64_t> xs,
                     absl::Time deadline) ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Drops every block and the cursor; the worker stays usable.
  void Clear() ABSL_LOCKS_EXCLUDED(lock_.mu);

  // A copy of everything the worker holds as of one instant T, taken in
  // steps so that no hold of the worker's lock copies more than
  // steps.positions table positions, whatever the worker's size; Apply,
  // Clear and the rest run in between.
  //   1. One hold starts a cut (engine_map.h) of every group: from then on,
  //      every call that changes a group's blocks ends (Publish) by settling
  //      the keys it changed: their blocks (parents included) as the call
  //      leaves them. A group created meanwhile starts its cut as it is created.
  //   2. Holds copy each group's pinned positions, a step at a time.
  //   3. One hold is T: it takes each group's settled keys and copies the
  //      cursor, model, contexts and the groups' shapes (O(groups)).
  // Invariant (EngineMap's cut, per group): the blocks at T are those copied
  // in 2 whose key was not settled (none when the group was cleared during
  // the cut), plus every settled key that holds a block. The cursor and the rest are read at T:
  // the snapshot is the worker right after the last batch applied before T,
  // its cursor that batch's. Assembling the blocks (dropping the copies of
  // settled keys) and freeing what the cuts kept run with no lock held.
  // During an export each call that changes blocks also pays a look-up and a
  // hash-map write per block it changes (settling). After a hold of 100 us
  // or more, the export stays off the lock as long as it held it, so a
  // waiting Apply gets in (absl::Mutex does not hand a released lock to a
  // waiter: re-locking at once starved Apply). `pause`, when given,
  // receives the longest hold and the number of holds. A worker removed
  // before T comes without a cursor.
  WorkerSnapshot Export(ExportPause* pause = nullptr, const ExportSteps& steps = {})
      ABSL_LOCKS_EXCLUDED(export_lock_.mu, lock_.mu);

  // OK when `snapshot` describes a state a worker can be in (Import takes it
  // whole); INVALID_ARGUMENT naming what is wrong otherwise.
  static absl::Status Validate(const WorkerSnapshot& snapshot);

  // Fills a worker that holds nothing yet with a Validate()d snapshot, then
  // evicts down to `max_blocks` (0: no cap); returns the evictions.
  uint64_t Import(const WorkerSnapshot& snapshot, size_t max_blocks) ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Drops every block, releases the worker's contexts, and makes later Apply
  // calls no-ops: the worker is gone from the directory.
  void Remove() ABSL_LOCKS_EXCLUDED(lock_.mu);

  // The global cap: while the index holds more than `max_entries` entries,
  // evicts blocks of this worker, leaves first (EngineMap), at most `at_most`.
  void EvictOverCap(uint64_t max_entries, uint64_t at_most) ABSL_LOCKS_EXCLUDED(lock_.mu);

  WorkerStats Stats() const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Engine hashes held, unordered.
  std::vector<uint64_t> EngineHashes() const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Bytes of this object and its tables.
  size_t MemoryBytes() const ABSL_LOCKS_EXCLUDED(lock_.mu);

 private:
  // Most GPU blocks one offloaded chunk may cover; a chunk event claiming
  // more is not a real engine's and is skipped, counted.
  static constexpr uint32_t kMaxChunkBlocks = 4096;

  // One KV cache group's blocks (the whole worker's, for a single-group model).
  struct Group {
    explicit Group(uint32_t holder) : updates(holder) {}
    uint32_t group_idx = 0;
    bool named = false;                     // an event carried its group_idx or kind
    std::optional<std::string> kind;        // kv_cache_spec_kind, as last sent
    uint32_t window = 0;                    // kv_cache_spec_sliding_window, as last sent
    uint32_t block_size = 0;                // of its last event stored with tokens
    EngineMap blocks;
    HolderUpdates updates;
    std::array<uint64_t, kMaxMedia> blocks_by_medium = {};
    // Offloading (vLLM's OffloadingConnector): a chunk on a medium covers the
    // block it names and its f-1 predecessors (their parents in `blocks`).
    // chunk_blocks: f per medium, as last stored.
    std::array<uint32_t, kMaxMedia> chunk_blocks = {};
  };

  // During an export: settles the keys each group's cut has pending (see Export).
  void SettleCuts() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // Appends a group (its holder: the next slot); during an export, with its cut begun.
  Group& NewGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // The group an event names (nullopt: group 0); nullptr when it has none yet.
  Group* FindGroup(std::optional<uint32_t> group_idx) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // The group an event names (nullopt: group 0), created on first use;
  // nullptr past kMaxGroupIdx or kMaxGroupsPerWorker groups.
  Group* GroupOf(std::optional<uint32_t> group_idx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // The group whose blocks stand for the worker in Match and stats: the first
  // full-attention-kind group by group_idx, else the lowest group_idx; nullptr
  // before any group.
  const Group* Primary() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  std::optional<uint64_t> ParentIndex(const Group& g, uint64_t engine, uint32_t block_size) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  void ApplyStored(const BlockStored& ev, ApplyResult& result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  void ApplyOffloaded(Group& g, const BlockStored& ev, ApplyResult& result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // Appends the predecessors of `engine` a chunk of `f` blocks covers, nearest first.
  static void AppendChunkPredecessors(const Group& g, uint64_t engine, uint32_t f, std::vector<uint64_t>& out);
  void ApplyRemoved(const BlockRemoved& ev, ApplyResult& result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  bool Store(Group& g, uint64_t engine, uint64_t x, MediumMask m, std::optional<uint64_t> parent)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  void Forget(Group& g, const EngineMap::Block& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  static void CountMedia(Group& g, MediumMask media, int delta);
  uint64_t ContextSeedFor(const std::string& lora, uint32_t block_size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // Evicts one block, leaves first (EngineMap), from the group holding the most.
  void EvictOne() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  void ClearLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // Queues a holder update; a full queue is carried out at once, so it never
  // holds more than HolderUpdates::kMaxPending. (Defined here to be inlined
  // into Store and Forget, as it was before the split.)
  void Queue(Group& g, const HolderOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu) {
    if (g.updates.Push(op)) table_.Apply(g.updates, lock_);
  }
  void Publish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // Whether the worker has speculative entries, or expired ones a late
  // confirmation may still measure (one relaxed load when nobody has any);
  // when so, Store and Forget note their X for SettleSpeculative.
  bool HasSpeculative() const;
  // After the holder updates are carried out: confirms the entries of the X
  // stored since the last call, drops those of the X forgotten.
  void SettleSpeculative() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // Drops every speculative entry of the worker (`forget`: its latencies too).
  void DropSpeculative(bool forget) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  size_t BlocksLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);

  // Constant after construction.
  const uint32_t id_;
  const WorkerKey key_;
  BlockTable& table_;
  ContextRegistry& contexts_;
  MediumTable& media_;
  IndexCounters& counters_;
  SpeculativeTable* const speculative_;

  ExportLock export_lock_;
  WorkerLock lock_;
  bool removed_ ABSL_GUARDED_BY(lock_.mu) = false;
  bool exporting_ ABSL_GUARDED_BY(lock_.mu) = false;  // between Export's steps 1 and T: cuts settle
  std::string model_ ABSL_GUARDED_BY(lock_.mu);
  std::string default_lora_ ABSL_GUARDED_BY(lock_.mu);
  std::vector<std::unique_ptr<Group>> groups_ ABSL_GUARDED_BY(lock_.mu);  // by slot
  ContextSet used_contexts_ ABSL_GUARDED_BY(lock_.mu);
  // Seed of the context last stored into (a cache: ContextSeed allocates).
  ContextKey last_context_ ABSL_GUARDED_BY(lock_.mu);
  uint64_t last_seed_ ABSL_GUARDED_BY(lock_.mu) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(lock_.mu) = 0;
  uint64_t unresolved_parents_ ABSL_GUARDED_BY(lock_.mu) = 0;
  double last_event_ts_ ABSL_GUARDED_BY(lock_.mu) = 0;
  std::optional<BatchCursor> cursor_ ABSL_GUARDED_BY(lock_.mu);  // of the last batch applied with one
  // While an Apply of a worker with speculative entries runs: the X it stored
  // and forgot, settled at its end.
  bool settling_ ABSL_GUARDED_BY(lock_.mu) = false;
  std::vector<uint64_t> stored_xs_ ABSL_GUARDED_BY(lock_.mu);
  std::vector<uint64_t> forgotten_xs_ ABSL_GUARDED_BY(lock_.mu);

  // Written under lock_.mu, read without it.
  std::atomic<uint32_t> block_size_{0};
  std::atomic<uint32_t> hint_block_size_{0};
  std::atomic<uint64_t> live_{0};  // blocks of every group as of the last Publish
  std::atomic<uint32_t> group_count_{0};
  std::array<std::atomic<uint64_t>, kMaxGroupsPerWorker> group_shapes_ = {};  // GroupShape::Pack()
};

}  // namespace kvindex
