#pragma once

// PrefixIndex: which workers hold which blocks, fed by decoded engine events and
// queried by Match. See DESIGN.md "Semantics" and README "Index hash".
//
// Thread safety: every public call may be made concurrently from any thread.
// Apply calls for different workers run in parallel; Match never waits for a
// whole batch to be applied (it takes short per-shard reader locks only).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/events/event_batch.h"
#include "core/index/extra_keys_hash.h"
#include "core/index/worker_key.h"
#include "core/index/worker_snapshot.h"

namespace kvindex {

// Speculative entries: the blocks of prompts gateways routed to a worker
// (RecordRouting), matched as the tier "SPECULATIVE" until the worker's engine
// confirms them (README "Routing hints").
struct SpeculativeOptions {
  // Most speculative entries in the whole index; beyond it the least recently
  // recorded are dropped. 0 means unlimited.
  size_t max_entries = 1u << 20;
  // The adaptive TTL (a hint without one): `ttl` until a worker has
  // ConfirmLatencies::kMinSamples confirmations, then a high quantile of its
  // recent confirmation latencies times a safety factor within [ttl_min,
  // ttl_max] (internal/confirm_latencies.h).
  absl::Duration ttl = absl::Seconds(2);
  absl::Duration ttl_min = absl::Milliseconds(200);
  absl::Duration ttl_max = absl::Seconds(30);
  // Block size of hints given by tokens for a (model, LoRA) no event has shown
  // a block size of (vLLM's default).
  uint32_t default_block_size = 16;
  // The clock deadlines and latencies are read from; null: absl::Now. Tests
  // inject one.
  std::function<absl::Time()> clock;
  // Called with each confirmation's latency (RecordRouting -> the confirming
  // batch applied), on the thread applying the batch; must take no index lock.
  std::function<void(absl::Duration)> on_confirm;
};

struct IndexOptions {
  // Most engine blocks one worker may hold; beyond it the worker's blocks are
  // evicted leaves first (a block no held block names as parent), by second
  // chance among them (an approximation of LRU: a block stored since it was
  // last looked at is spared once; internal/engine_map.h). 0 means unlimited.
  size_t max_blocks_per_worker = 4u << 20;
  // Most (block, worker) entries in the whole index; beyond it blocks are
  // evicted, leaves first, from the worker holding the most. 0 means unlimited.
  size_t max_entries = 64u << 20;
  // Number of lock shards of the block table (rounded up to a power of two).
  size_t shards = 64;
  SpeculativeOptions speculative;
};

// Where a worker's events come from: its model and the LoRA name used when an
// event carries none (the pod's label).
struct WorkerContext {
  std::string model;
  std::string default_lora;
};

// What one Apply() call did.
struct ApplyResult {
  uint64_t blocks_stored = 0;       // engine blocks newly stored or stored on another medium
  uint64_t blocks_removed = 0;      // engine blocks removed from at least one medium
  uint64_t clears = 0;              // AllBlocksCleared events
  uint64_t unresolved_parents = 0;  // BlockStored events whose parent is unknown (not indexed)
  uint64_t blocks_unindexed = 0;    // blocks of those events, and of events naming a group past the
                                    // limits (group_idx > 255, or a worker's 17th group)
  uint64_t unknown_removals = 0;    // removed hashes the worker did not hold
  uint64_t unknown_chunks = 0;      // offloaded chunks (no tokens) naming a block the worker did not hold
  uint64_t evictions = 0;           // entries evicted by this worker's cap
  bool worker_removed = false;      // the worker was removed concurrently; nothing applied
};

struct MatchQuery {
  std::string_view model;
  std::string_view lora_name;
  // Exactly one of these is non-empty.
  absl::Span<const uint32_t> token_ids;
  absl::Span<const uint64_t> block_hashes;  // index hashes (block_hash.h)
  // With token_ids: what vLLM folds into its block hashes besides the tokens
  // (extra_keys_hash.h); a block they touch matches only blocks stored with the same keys.
  std::string_view cache_salt;
  absl::Span<const MultimodalInput> mm_inputs;
  // Candidate pods ("namespace/name"); empty means every pod.
  absl::Span<const std::string> pods;
  // Weight per tier for the score, keyed by medium ("CPU": every locality)
  // or by medium and locality ("CPU/REMOTE": remote copies, over "CPU");
  // a tier neither names weighs 1.0 (internal/medium_table.h).
  absl::flat_hash_map<std::string, double> medium_weights;
};

// For a worker whose events name several KV cache groups (a hybrid model),
// the hit is the longest prefix every group accepts by vLLM's rule for its
// kind (internal/kv_cache_group.h), and the blocks counted are those of its
// first full-attention group.
struct WorkerMatch {
  WorkerKey worker;
  uint32_t matched_blocks = 0;  // leading blocks held, contiguous from block 0, any medium
  uint32_t matched_tokens = 0;  // the hit's length: matched_blocks * block_size
  uint32_t block_size = 0;
  // Matched blocks held on each medium (a block on GPU and CPU counts in both),
  // by name; inline for two media, so that a Match naming 100 workers does not
  // allocate 100 times for them.
  absl::InlinedVector<std::pair<std::string, uint32_t>, 2> blocks_by_medium;
  // Sum over matched blocks of the highest weight among the media holding it.
  double score = 0;
};

struct MatchResult {
  uint32_t block_size = 0;    // block size of the answer (best worker's, else smallest known)
  uint32_t query_blocks = 0;  // full blocks in the query at that block size
  std::vector<WorkerMatch> workers;  // best first: score, matched blocks, then key
};

// One KV cache group of a hybrid model's worker, as its events describe it.
struct GroupStats {
  uint32_t group_idx = 0;
  std::string kind;             // kv_cache_spec_kind; empty when the engine did not say
  uint32_t sliding_window = 0;  // tokens; 0 unless a sliding-window group
  uint32_t block_size = 0;
  uint64_t blocks = 0;          // engine blocks the group holds

  bool operator==(const GroupStats&) const = default;
};

// A gateway's routing decision: it sent this prompt to `worker`
// (PrefixIndex::RecordRouting).
struct RoutingHint {
  WorkerKey worker;
  std::string_view model;
  std::string_view lora_name;
  // Exactly one of these is non-empty, as in MatchQuery (with the same
  // cache_salt and mm_inputs for token_ids).
  absl::Span<const uint32_t> token_ids;
  absl::Span<const uint64_t> block_hashes;
  std::string_view cache_salt;
  absl::Span<const MultimodalInput> mm_inputs;
  // How long the entries wait for the engine's confirmation: nullopt: the
  // worker's adaptive TTL; absl::InfiniteDuration(): until evicted by the cap
  // (a pod without KV events).
  std::optional<absl::Duration> ttl;
};

struct RoutingResult {
  uint32_t blocks = 0;  // speculative entries written or refreshed (blocks not held confirmed)
  absl::Duration ttl;   // the TTL applied (InfiniteDuration: none)
};

struct SpeculativeStats {
  uint64_t entries = 0;    // held now (expired ones not purged yet included)
  uint64_t confirmed = 0;  // since start: confirmed by the worker's engine
  uint64_t expired = 0;    //   reached their deadline unconfirmed
  uint64_t dropped = 0;    //   dropped: the worker removed the block, cleared, restarted or was
                           //   removed, or the entry was evicted by max_entries
};

struct WorkerStats {
  WorkerKey worker;
  std::string model;
  // Engine blocks held, in all and by medium: of the group Match counts for a
  // hybrid model (its first full-attention group), else of the worker.
  uint64_t blocks = 0;
  std::vector<std::pair<std::string, uint64_t>> blocks_by_medium;
  // The KV cache groups, by group_idx, when the worker's events named any
  // (group_idx or kv_cache_spec_kind); empty otherwise.
  std::vector<GroupStats> groups;
  uint64_t evictions = 0;
  uint64_t unresolved_parents = 0;
  double last_event_ts = 0;  // ts of the last applied batch
  uint64_t speculative_entries = 0;  // live speculative entries
  absl::Duration speculative_ttl;    // the TTL a hint without one would get now
};

struct IndexStats {
  uint64_t workers = 0;
  uint64_t blocks = 0;          // distinct index hashes held by anyone
  uint64_t entries = 0;         // (engine block, worker) entries
  uint64_t memory_bytes = 0;    // bytes allocated by the index's tables
  uint64_t evictions = 0;       // entries evicted by either cap
  uint64_t unresolved_parents = 0;
};

// What one ExportWorker cost the worker's ingestion: the export holds the
// worker's lock in steps, and the worker's Apply waits only for the step
// under way.
struct ExportPause {
  absl::Duration longest_hold = absl::ZeroDuration();  // the longest step
  uint32_t holds = 0;                                  // steps
};

class PrefixIndex {
 public:
  explicit PrefixIndex(IndexOptions options = {});
  ~PrefixIndex();
  PrefixIndex(const PrefixIndex&) = delete;
  PrefixIndex& operator=(const PrefixIndex&) = delete;

  // Applies every event of `batch` to `worker` (created on first use) in order.
  // BlockRemoved/AllBlocksCleared affect only this worker. Events the worker
  // cannot index (unknown parent) are counted in the result, not errors.
  // `cursor`, when given, is recorded with the worker's blocks, under the same
  // lock: a later ExportWorker says exactly which batch its blocks follow.
  [[nodiscard]] ApplyResult Apply(const WorkerKey& worker, const WorkerContext& context, const EventBatch& batch,
                                  const std::optional<BatchCursor>& cursor = std::nullopt);

  // Drops every block of `worker` but keeps it known (engine restart,
  // unrecoverable gap); its cursor is forgotten too.
  void ClearWorker(const WorkerKey& worker);

  // Drops `worker` and all its blocks. No-op when unknown.
  void RemoveWorker(const WorkerKey& worker);

  // Removes every worker (every dp rank) of `pod`.
  void RemovePod(std::string_view pod);

  // For each worker holding block 0 of the query, how many leading blocks it
  // holds. INVALID_ARGUMENT when the model is empty or not exactly one of
  // token_ids / block_hashes is given. An unknown model is an empty OK result.
  absl::StatusOr<MatchResult> Match(const MatchQuery& query) const;

  // Records a routing decision: each full block of the prompt that `worker`
  // does not hold becomes (or stays) a speculative entry of the worker until
  // its engine stores it (confirmed), drops it, clears or restarts
  // (ClearWorker), the worker is removed, or the TTL passes. Blocks by tokens
  // are hashed at the worker's block size, else the (model, LoRA)'s smallest,
  // else options.speculative.default_block_size. The worker is created when
  // unknown (a pod without KV events). INVALID_ARGUMENT as Match's.
  absl::StatusOr<RoutingResult> RecordRouting(const RoutingHint& hint);

  // Speculative entries: totals; purges expired entries first.
  SpeculativeStats GetSpeculativeStats() const;

  // Stats of one worker; nullopt when unknown.
  std::optional<WorkerStats> GetWorkerStats(const WorkerKey& worker) const;

  // Stats of every worker, ordered by key.
  std::vector<WorkerStats> ListWorkers() const;

  // Engine hashes `worker` holds, unordered (debugging and tests).
  std::vector<uint64_t> EngineHashes(const WorkerKey& worker) const;

  IndexStats Stats() const;

  // Keys of every worker, ordered.
  std::vector<WorkerKey> WorkerKeys() const;

  // A consistent copy of `worker`: its blocks, groups, contexts and cursor,
  // all as of one instant (the blocks are exactly those the worker holds
  // right after the batch of the cursor). Taken in steps that each hold the
  // worker's lock for a bounded number of entries (a few ms at most,
  // whatever the worker's size); the worker's Apply runs between them, Match
  // and other workers never wait. `pause`, when given, receives the steps'
  // cost. Exports of one worker run one at a time. nullopt when unknown; a
  // worker removed meanwhile comes without a cursor.
  std::optional<WorkerSnapshot> ExportWorker(const WorkerKey& worker, ExportPause* pause = nullptr) const;

  // Creates `snapshot.worker` holding exactly what the snapshot says (as if
  // its batches had been applied), then enforces the caps as Apply does.
  // FAILED_PRECONDITION when the worker already exists; INVALID_ARGUMENT
  // (nothing created) when the snapshot is not one a worker could be in: a
  // group past the limits, a block on no tier or on an unnamed one.
  [[nodiscard]] absl::Status ImportWorker(const WorkerSnapshot& snapshot);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvindex
