#pragma once

// EngineMap: one worker's engine blocks — engine hash -> (index hash, media) —
// with second-chance eviction, an approximation of LRU: storing a block marks
// it; EvictOne() looks at blocks at random positions, clearing the marks it
// finds, and evicts the first unmarked one (random positions keep the
// buckets' load even, where a CLOCK hand would empty one region at a time).
// 17 bytes a slot (a tagged BucketTable: the media and the mark in the tag).
//
// A cut is a copy of the map as of one instant taken in steps, with other
// calls in between (WorkerBlocks::Export copies a worker so, a bounded number
// of entries per hold of its lock). BeginCut() starts it: the table's arrays
// are pinned (BucketTable::Pin), and from then on the key of every block
// stored, taken off a medium, evicted, or moved by the table is noted as
// pending. The owner calls SettleCut() at the end of every call that changes
// the map (before anyone else may see the map): it records each pending key's
// block as it is then (or its absence), with a value of the owner's attached,
// in the cut's settled map. CopyCut() reads the pinned positions in order, a
// step at a time; EndCut() hands over the settled map.
// Invariant, for the copy at an instant T when nothing is pending (after a
// SettleCut, before EndCut), for each key k:
//   - k settled: its last change was followed by a SettleCut before T, and
//     nothing changed it since, so its settled entry is its block at T;
//   - k not settled: its block (or its absence) is the same from BeginCut to
//     T, and if present it sat at one pinned position all along, so CopyCut
//     reported it exactly once, as it is at T (and any block CopyCut reports
//     with a key not settled is one held at T).
// So the blocks at T are: those CopyCut reported whose key is not settled,
// plus every settled entry with a block. When Clear() runs during the cut,
// it drops what was settled and marks the cut cleared: nothing CopyCut
// reported counts any more (every block held at T was stored after the
// clear, so it is settled) and CopyCut has no step left. Key 0, which lives
// beside the arrays, is pending from BeginCut when held. Second-chance marks
// are not part of a cut (nor of Block). One cut at a time.
//
// Not thread-safe.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/index/internal/bucket_table.h"
#include "core/index/internal/medium_table.h"

namespace kvindex {

class EngineMap {
 public:
  struct Block {
    uint64_t engine;
    uint64_t index;
    MediumMask media;  // never 0
  };

  size_t size() const { return table_.size(); }
  size_t MemoryBytes() const { return table_.MemoryBytes(); }

  // Grows the map at once to hold `n` blocks without growing again (see
  // BucketTable::Reserve); a block already held may move (a cut logs it).
  void Reserve(size_t n) { table_.Reserve(n); }

  // Starts loading the slot of `engine` (see BucketTable::Prefetch).
  void Prefetch(uint64_t engine) const { table_.Prefetch(engine); }

  // The block stored under `engine`, if any.
  std::optional<Block> Find(uint64_t engine) const;

  // Stores (engine -> index, media) and marks it referenced; returns the block
  // it replaces, if any. A block already stored under `engine` with the same
  // index keeps its media too (the union); with another index it is replaced.
  std::optional<Block> Store(uint64_t engine, uint64_t index, MediumMask media);

  // Takes `engine`'s block off medium `media` (forgetting it when that was its
  // only one) and returns it as it was; nullopt when absent or not on `media`.
  std::optional<Block> Remove(uint64_t engine, MediumMask media);

  // Removes and returns a block not stored since it was last looked at.
  // Requires size() > 0.
  Block EvictOne();

  // Calls fn(const Block&) for every block.
  template <typename Fn>
  void ForEach(Fn fn) const {
    table_.ForEach([&](uint64_t engine, uint64_t index, uint8_t tag) {
      fn(Block{engine, index, static_cast<MediumMask>(tag & kMediaBits)});
    });
  }

  void Clear();

  // The cut (see the header). BeginCut starts one (ending any earlier one).
  void BeginCut();
  bool cutting() const { return cut_ != nullptr; }
  // Calls fn(const Block&) for the blocks at the next `positions` pinned
  // positions; returns false once no position is left (or the map was
  // cleared). Requires cutting().
  template <typename Fn>
  bool CopyCut(size_t positions, Fn fn) {
    const size_t end = table_.PinnedEnd();
    const size_t to = std::min(end, cut_->next + positions);
    table_.ForEachPinned(cut_->next, to, [&](uint64_t engine, uint64_t index, uint8_t tag) {
      fn(Block{engine, index, static_cast<MediumMask>(tag & kMediaBits)});
    });
    cut_->next = to;
    return to < end;
  }
  // A key's state once settled: its block (nullopt: none) and the owner's value.
  struct Settled {
    std::optional<Block> block;
    std::optional<uint64_t> attached;
  };
  // Settles every pending key (see the header): attach(engine) returns the
  // owner's value for a key that holds a block (std::optional<uint64_t>).
  // No-op without a cut or when nothing is pending.
  template <typename Attach>
  void SettleCut(Attach attach) {
    if (cut_ == nullptr) return;
    for (const uint64_t engine : cut_->pending) {
      Settled& s = cut_->settled[engine];
      s.block = Find(engine);
      s.attached = s.block.has_value() ? attach(engine) : std::nullopt;
    }
    cut_->pending.clear();
  }
  // What a cut leaves: the settled keys, whether the map was cleared during
  // it, and the memory of the pinned arrays, freed when this is dropped (so
  // the owner may drop it outside its lock).
  struct CutResult {
    bool cleared = false;
    absl::flat_hash_map<uint64_t, Settled> settled;
    BucketTable<true>::Kept kept;
  };
  // Ends the cut. Requires cutting() and nothing pending.
  CutResult EndCut();

 private:
  struct Cut {
    std::vector<uint64_t> pending;  // changed or moved since the last SettleCut; repeats allowed
    absl::flat_hash_map<uint64_t, Settled> settled;
    size_t next = 0;  // the next pinned position CopyCut reads
    bool cleared = false;
  };
  void Note(uint64_t engine) {
    if (cut_ != nullptr) cut_->pending.push_back(engine);
  }

  static constexpr uint8_t kMarked = 0x80;
  static constexpr uint8_t kMediaBits = 0x7f;
  static_assert(kMaxMedia <= 7, "the top tag bit is the second-chance mark");

  size_t RandomPosition();

  BucketTable</*kTagged=*/true> table_;
  uint64_t rng_ = 0x9e3779b97f4a7c15ULL;  // xorshift64* state; deterministic per map
  std::unique_ptr<Cut> cut_;               // null: no cut
};

}  // namespace kvindex
