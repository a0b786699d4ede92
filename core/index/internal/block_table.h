#pragma once

// BlockTable: index hash X -> the workers holding block X, split into lock
// shards by X; and HolderUpdates, the changes one worker queues to its holders
// while it applies events, which the table carries out shard by shard.
//
// A worker's Holder of X (holder_table.h) carries the union of the media the
// worker holds X on and `refs`, the number of the worker's engine blocks that
// map to X (usually 1; more when engine hashes differ for identical token
// chains, e.g. multimodal inputs or cache salts). For an X with refs > 1 the
// worker's HolderUpdates also keeps per-medium counts (its aliases), so that
// the holder's media stay the exact union when one of those blocks goes away.
//
// Thread safety: BlockTable's calls may be made from any thread; each holds
// one shard lock at a time (readers share it), except that readers may keep
// several in a ReaderLockSet (which never waits while it holds one). A
// HolderUpdates belongs to one worker and is guarded by that worker's
// WorkerLock, which Apply requires.
// Lock order: lock_order.h (ShardLock, the last).

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "core/index/internal/holder_table.h"
#include "core/index/internal/lock_order.h"
#include "core/index/internal/medium_table.h"
#include "core/index/internal/reader_lock_set.h"

namespace kvindex {

// Blocks between a slot's prefetch and its use, wherever a batch of blocks
// walks a table: enough to overlap ~8 cache misses, few enough that the lines
// are still in L1.
inline constexpr size_t kPrefetchAhead = 8;

// A change to one worker's holder of block X.
struct HolderOp {
  enum Kind : uint8_t {
    kAddRef,       // a new engine block maps to X on medium `a`
    kChangeMedia,  // an engine block mapping to X changed media from `a` to `b`
    kDropRef,      // an engine block mapping to X with media `a` is gone
    kClear,        // the worker holds X no more (all its blocks are cleared)
  };
  uint64_t x;
  Kind kind;
  MediumMask a = 0;
  MediumMask b = 0;
};

// One worker's holder updates not yet carried out, and its alias counts.
// Not thread-safe: its worker's lock guards it.
class HolderUpdates {
 public:
  // Most updates queued before they must be carried out.
  static constexpr size_t kMaxPending = 256;

  explicit HolderUpdates(uint32_t worker) : worker_(worker) {}
  HolderUpdates(const HolderUpdates&) = delete;
  HolderUpdates& operator=(const HolderUpdates&) = delete;

  // Queues `op`; true when the queue is now full: carry it out
  // (BlockTable::Apply) before queuing more.
  [[nodiscard]] bool Push(const HolderOp& op) {
    pending_.push_back(op);
    return pending_.size() >= kMaxPending;
  }

  bool empty() const { return pending_.empty(); }

  // Forgets the alias counts. Only once every block the worker held is
  // cleared (kClear) and carried out: the updates queued before use them.
  void ForgetAliases() { aliases_ = {}; }

  // Heap bytes of the queue, its scratch and the aliases.
  size_t MemoryBytes() const {
    return aliases_.capacity() * (sizeof(std::pair<uint64_t, AliasCounts>) + 1) +
           (pending_.capacity() + by_shard_.capacity()) * sizeof(HolderOp) + shard_ends_.capacity() * sizeof(uint32_t);
  }

 private:
  friend class BlockTable;
  using AliasCounts = std::array<uint16_t, kMaxMedia>;

  const uint32_t worker_;
  std::vector<HolderOp> pending_;
  // Scratch of BlockTable::Apply, kept to spare its allocations.
  std::vector<HolderOp> by_shard_;
  std::vector<uint32_t> shard_ends_;
  // X -> blocks of the worker on each medium, for the X it holds with refs > 1.
  absl::flat_hash_map<uint64_t, AliasCounts> aliases_;
};

class BlockTable {
 public:
  // `shards` is rounded up to a power of two (at least 1).
  explicit BlockTable(size_t shards);
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;

  // Starts loading X's slot, without its shard's lock (see HolderTable::Prefetch).
  void Prefetch(uint64_t x) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    // Reads `blocks` without the shard's lock: HolderTable::Prefetch is safe
    // from any thread, which the analysis cannot know.
    ShardOf(x).blocks.Prefetch(x);
  }

  // Carries out the queued updates of `updates`' worker, in order per block,
  // and empties the queue. `worker` is that worker's lock, held. Grouped by
  // shard (a stable counting sort), one lock per shard touched, each slot
  // prefetched kPrefetchAhead updates ahead: queuing saves locks and lets the
  // misses of a batch overlap. Match sees a worker's batch shard by shard.
  void Apply(HolderUpdates& updates, const WorkerLock& worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(worker.mu);

  // Calls fn(absl::Span<const Holder>) with X's holders, sorted by worker
  // (empty when nobody holds X), under its shard's reader lock, and returns
  // what fn returns. `scratch` backs packed holders. fn must take no lock and
  // must not keep the span.
  template <typename Fn>
  auto WithHolders(uint64_t x, HolderTable::Scratch& scratch, Fn&& fn) const {
    const Shard& shard = ShardOf(x);
    absl::ReaderMutexLock lock(&shard.lock.mu);
    return fn(shard.blocks.Find(x, scratch));
  }

  // The same, with X's shard lock held as reader in `held` (taken if it is
  // not yet, and kept there): a walk over many blocks takes each shard's lock
  // once. fn must take no lock.
  template <typename Fn>
  auto WithHolders(uint64_t x, HolderTable::Scratch& scratch, ReaderLockSet& held, Fn&& fn) const
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    // `held` holds the shard's lock, which the analysis cannot know.
    const size_t i = ShardIndex(x);
    held.Hold(shards_[i].lock.mu, static_cast<uint32_t>(i));
    return fn(shards_[i].blocks.Find(x, scratch));
  }

  struct Usage {
    uint64_t blocks = 0;        // distinct X held by anyone
    uint64_t memory_bytes = 0;  // the shards and their tables
  };
  // Takes each shard's lock in turn: a sum, not a snapshot.
  Usage Measure() const;

 private:
  struct Shard {
    ShardLock lock;
    HolderTable blocks ABSL_GUARDED_BY(lock.mu);
  };

  size_t ShardIndex(uint64_t x) const { return (x >> shard_shift_) & (shards_.size() - 1); }
  Shard& ShardOf(uint64_t x) { return shards_[ShardIndex(x)]; }
  const Shard& ShardOf(uint64_t x) const { return shards_[ShardIndex(x)]; }

  static void ApplyOp(HolderUpdates& updates, Shard& shard, const HolderOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.lock.mu);

  // Constant after construction (the shards, not what they hold): the top bits of X pick its shard.
  std::vector<Shard> shards_;
  const int shard_shift_;
};

}  // namespace kvindex
