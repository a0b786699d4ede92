#pragma once

// SpeculativeTable: the index's speculative entries — (worker, index hash X)
// pairs a gateway said it routed a prompt to (PrefixIndex::RecordRouting) and
// the worker's engine has not confirmed yet — kept apart from the engine
// blocks: never in a worker's EngineMap, never in the BlockTable.
//
// An entry lives until the first of: the worker's engine stores X (confirmed:
// its latency feeds the worker's ConfirmLatencies), the worker drops X, clears
// or restarts, or is removed (dropped), its deadline passes (expired), or the
// table is over max_entries and it is the least recently recorded one
// (dropped). Match never names an entry at or past its deadline, whether or
// not it was purged yet: deadlines are checked at lookup; expired entries are
// purged (counted) by the next Record or PurgeExpired. An expired entry is
// remembered (its recording time, kLateEntries per worker) so that a late
// confirmation still feeds the worker's latencies — else a TTL below the
// engine's latency could never grow — without bringing the entry back.
//
// Layout: (worker, X) -> entry; X -> its holders, sorted by holder id, each
// with its deadline (what Match reads); the entries in order of last Record
// (the cap's victims) and by finite deadline (the purge's); per worker its
// X's and its ConfirmLatencies; the contexts (model, LoRA, block size) hints
// were hashed in, counted, so Match hashes a query in them too.
//
// Thread safety: every call may be made from any thread. Record, Confirm, Drop
// and DropWorker change one worker's entries and require that worker's
// WorkerLock (lock_order.h: WorkerLock, then SpeculativeLock); the table takes
// no other lock while holding its own. empty() reads an atomic: callers that
// never record pay one relaxed load.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/index/internal/confirm_latencies.h"
#include "core/index/internal/context_registry.h"
#include "core/index/internal/holder_table.h"
#include "core/index/internal/lock_order.h"
#include "core/index/internal/medium_table.h"
#include "core/index/prefix_index.h"

namespace kvindex {

// The media mask Match gives a block held only speculatively: a bit above
// every real medium's (kMaxMedia), so it is never a confirmed tier.
inline constexpr MediumMask kSpeculativeMask = MediumMask{1} << kMaxMedia;
// The tier name of kSpeculativeMask in answers and medium_weights.
inline constexpr char kSpeculativeTier[] = "SPECULATIVE";

class SpeculativeTable {
 public:
  explicit SpeculativeTable(SpeculativeOptions options);
  SpeculativeTable(const SpeculativeTable&) = delete;
  SpeculativeTable& operator=(const SpeculativeTable&) = delete;

  const SpeculativeOptions& options() const { return options_; }
  // The table's clock (options().clock, else absl::Now()).
  absl::Time Now() const { return options_.clock ? options_.clock() : absl::Now(); }

  // Expired entries remembered per worker for late confirmations.
  static constexpr size_t kLateEntries = 256;

  // True when the table holds no entry (expired ones not purged yet count).
  bool empty() const { return size_.load(std::memory_order_relaxed) == 0; }

  // True when `worker` has entries or remembered expired ones: its stored
  // blocks should be passed to Confirm. One relaxed load when nobody has any.
  bool Watches(uint32_t worker) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Writes or refreshes the entry of each X of `xs` for the worker of
  // `holder` (the holder Match credits: its primary group's), hashed in
  // `context`, with `deadline` (InfiniteFuture: none) and the recording time
  // now; a refreshed entry keeps its first recording time (the confirmation
  // latency runs from it) and takes the later deadline. Purges expired
  // entries first and evicts the least recently recorded beyond max_entries.
  // Returns xs.size().
  uint32_t Record(uint32_t holder, const ContextKey& context, absl::Span<const uint64_t> xs, absl::Time deadline,
                  const WorkerLock& worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(worker.mu) ABSL_LOCKS_EXCLUDED(lock_.mu);

  // The engine of `worker` stored each X of `xs`: their entries are
  // confirmed (gone), each latency recorded and passed to options().on_confirm
  // (after the table's lock is released).
  void Confirm(uint32_t worker, absl::Span<const uint64_t> xs, const WorkerLock& lock)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock.mu) ABSL_LOCKS_EXCLUDED(lock_.mu);

  // `worker` no longer holds the X of `xs`: their entries are dropped.
  void Drop(uint32_t worker, absl::Span<const uint64_t> xs, const WorkerLock& lock)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock.mu) ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Drops every entry of `worker` (cleared, restarted); `forget` also forgets
  // its latencies (removed).
  void DropWorker(uint32_t worker, bool forget, const WorkerLock& lock) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock.mu)
      ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Entries of `worker`, expired ones not purged yet included.
  size_t CountOf(uint32_t worker) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // The TTL a hint without one gets on `worker` now (ConfirmLatencies::Ttl
  // under the options' bounds).
  absl::Duration TtlOf(uint32_t worker) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Block sizes hints of (model, lora) were hashed in, ascending.
  std::vector<uint32_t> BlockSizes(std::string_view model, std::string_view lora) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Appends to `out` the holders with a live entry of X at `now` (deadline
  // after now), sorted by holder id, as Holders on kSpeculativeMask.
  void HoldersOf(uint64_t x, absl::Time now, std::vector<Holder>& out) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Whether `worker` has a live entry of X at `now`.
  bool Holds(uint64_t x, uint32_t worker, absl::Time now) const ABSL_LOCKS_EXCLUDED(lock_.mu);

  // Purges (counts as expired) every entry whose deadline is at or before `now`.
  void PurgeExpired(absl::Time now) ABSL_LOCKS_EXCLUDED(lock_.mu);

  SpeculativeStats Stats() const ABSL_LOCKS_EXCLUDED(lock_.mu);

 private:
  enum class Outcome { kConfirmed, kExpired, kDropped };
  struct Entry {
    absl::Time recorded;  // first Record
    absl::Time deadline;
    uint64_t lru;         // order of the last Record
    uint32_t holder;
    uint32_t context;     // index into contexts_
  };
  struct Spec {
    uint32_t holder;
    absl::Time deadline;
  };
  struct WorkerState {
    absl::flat_hash_set<uint64_t> xs;
    ConfirmLatencies latencies;
    // Expired entries: X -> first recording time, oldest first in late_order.
    absl::flat_hash_map<uint64_t, absl::Time> late;
    std::deque<uint64_t> late_order;
  };
  using Key = std::pair<uint32_t, uint64_t>;  // (worker, X)

  // Erases the entry `key` and counts it under `outcome`.
  void EraseLocked(const Key& key, Outcome outcome) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  void PurgeLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  // Publishes size_ and watched_.
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);
  uint64_t late_total_ ABSL_GUARDED_BY(lock_.mu) = 0;
  uint32_t ContextIdLocked(const ContextKey& context) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_.mu);

  const SpeculativeOptions options_;

  mutable SpeculativeLock lock_;
  absl::flat_hash_map<Key, Entry> entries_ ABSL_GUARDED_BY(lock_.mu);
  absl::flat_hash_map<uint64_t, absl::InlinedVector<Spec, 2>> by_x_ ABSL_GUARDED_BY(lock_.mu);
  absl::btree_map<uint64_t, Key> by_lru_ ABSL_GUARDED_BY(lock_.mu);
  absl::btree_set<std::tuple<absl::Time, uint32_t, uint64_t>> by_deadline_ ABSL_GUARDED_BY(lock_.mu);  // finite ones
  absl::flat_hash_map<uint32_t, WorkerState> workers_ ABSL_GUARDED_BY(lock_.mu);
  // Contexts of hints: key and how many entries were hashed in it (0: none now).
  std::vector<std::pair<ContextKey, uint64_t>> contexts_ ABSL_GUARDED_BY(lock_.mu);
  absl::flat_hash_map<ContextKey, uint32_t> context_ids_ ABSL_GUARDED_BY(lock_.mu);
  uint64_t next_lru_ ABSL_GUARDED_BY(lock_.mu) = 0;
  uint64_t confirmed_ ABSL_GUARDED_BY(lock_.mu) = 0;
  uint64_t expired_ ABSL_GUARDED_BY(lock_.mu) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(lock_.mu) = 0;

  std::atomic<size_t> size_{0};     // entries_.size(), written under lock_.mu
  std::atomic<size_t> watched_{0};  // size_ + remembered expired entries, written under lock_.mu
};

}  // namespace kvindex
