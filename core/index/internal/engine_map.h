#pragma once

// EngineMap: one worker's engine blocks — engine hash -> (index hash, media,
// parent engine hash) — with leaves-first second-chance eviction.
//
// Each block records the parent the engine named for it, and counts its
// children: the blocks held that name it as their parent and were stored while
// it was held (each such child is marked counted, so only those count down
// when they go). Engines evict a chain's leaves before its parents (a parent
// evicted first would leave its descendants unmatchable), and so does
// EvictOne(): it evicts only blocks without children, by second chance, an
// approximation of LRU: storing a block marks it; EvictOne() first tries the
// block whose count last fell to zero (after an eviction, the chain's next
// block: it walks a chain up from its tail, as engines free it), else looks at
// blocks at random positions, clearing the marks it finds, and evicts the
// first unmarked leaf (random positions keep the buckets' load even, where a
// CLOCK hand would empty one region at a time). A block stored while its
// parent was absent is not counted (nothing finds children) until it is stored
// again: when the parent is stored meanwhile, it may go before that block,
// which then matches nothing until it is evicted in turn (RecountChildren,
// after an import, counts every link). 27 bytes a slot: a BucketTable tagged
// with the parent, the child count (15 bits, saturating: a block with 32,767
// children is never a leaf again) and the counted bit, the media and the mark.
//
// A cut is a copy of the map as of one instant taken in steps, with other
// calls in between (WorkerBlocks::Export copies a worker so, a bounded number
// of entries per hold of its lock). BeginCut() starts it: the table's arrays
// are pinned (BucketTable::Pin), and from then on the key of every block
// stored, taken off a medium, evicted, or moved by the table is noted as
// pending. The owner calls SettleCut() at the end of every call that changes
// the map (before anyone else may see the map): it records each pending key's
// block as it is then (or its absence) in the cut's settled map. CopyCut()
// reads the pinned positions in order, a step at a time; EndCut() hands over
// the settled map.
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
// and child counts are not part of a cut (nor of Block); a block's parent
// changes only when it is stored, so it is. One cut at a time.
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
  // A block's tag. Packed: 11 bytes (unaligned loads cost nothing on x86).
  struct __attribute__((packed)) Tag {
    uint64_t parent;    // the block's own engine hash: none
    uint16_t children;  // count (kMaxChildren: saturated, never counted down) | kCounted
    uint8_t bits;       // media | kMarked
  };

 public:
  struct Block {
    uint64_t engine;
    uint64_t index;
    MediumMask media;                // never 0
    std::optional<uint64_t> parent;  // the engine hash the engine named as its parent
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

  // Stores (engine -> index, media, parent) and marks it referenced; returns
  // the block it replaces, if any. A block already stored under `engine` with
  // the same index keeps its media too (the union); with another index it is
  // replaced. The block counts as a child of its parent when that is held
  // (once: a block stored again is counted again only under a new parent, or
  // if it was not counted before); a parent equal to `engine` is none.
  std::optional<Block> Store(uint64_t engine, uint64_t index, MediumMask media, std::optional<uint64_t> parent);

  // Takes `engine`'s block off medium `media` (forgetting it when that was its
  // only one: its parent has a child less) and returns it as it was; nullopt
  // when absent or not on `media`.
  std::optional<Block> Remove(uint64_t engine, MediumMask media);

  // Removes and returns a block without children not stored since it was
  // last looked at (see the header); when no block is without children
  // (counts saturated), any block not stored since. Requires size() > 0.
  Block EvictOne();

  // Counts every block's children again from the parents recorded (after
  // blocks were stored in any order, as an import does). O(size()) look-ups.
  void RecountChildren();

  // Calls fn(const Block&) for every block.
  template <typename Fn>
  void ForEach(Fn fn) const {
    table_.ForEach([&](uint64_t engine, uint64_t index, Tag tag) { fn(BlockOf(engine, index, tag)); });
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
    table_.ForEachPinned(cut_->next, to, [&](uint64_t engine, uint64_t index, Tag tag) {
      fn(BlockOf(engine, index, tag));
    });
    cut_->next = to;
    return to < end;
  }
  // Settles every pending key (see the header): records its block as it is
  // now (nullopt: none). No-op without a cut or when nothing is pending.
  void SettleCut();
  // What a cut leaves: the settled keys' blocks, whether the map was cleared
  // during it, and the memory of the pinned arrays, freed when this is
  // dropped (so the owner may drop it outside its lock).
  struct CutResult {
    bool cleared = false;
    absl::flat_hash_map<uint64_t, std::optional<Block>> settled;
    BucketTable<Tag>::Kept kept;
  };
  // Ends the cut. Requires cutting() and nothing pending.
  CutResult EndCut();

 private:
  struct Cut {
    std::vector<uint64_t> pending;  // changed or moved since the last SettleCut; repeats allowed
    absl::flat_hash_map<uint64_t, std::optional<Block>> settled;
    size_t next = 0;  // the next pinned position CopyCut reads
    bool cleared = false;
  };
  void Note(uint64_t engine) {
    if (cut_ != nullptr) cut_->pending.push_back(engine);
  }

  static constexpr uint16_t kMaxChildren = 0x7fff;
  static constexpr uint16_t kCounted = 0x8000;  // the block is one of its parent's children
  static constexpr uint8_t kMarked = 0x80;
  static constexpr uint8_t kMediaBits = 0x7f;
  static_assert(kMaxMedia <= 7, "the top bit of Tag::bits is the second-chance mark");

  static Block BlockOf(uint64_t engine, uint64_t index, const Tag& tag) {
    return Block{engine, index, static_cast<MediumMask>(tag.bits & kMediaBits),
                 tag.parent == engine ? std::nullopt : std::optional<uint64_t>(tag.parent)};
  }
  static uint16_t Children(const Tag& tag) { return tag.children & kMaxChildren; }
  // Counts the block at `pos` as a child of its parent, when that is held.
  void Link(size_t pos);
  // Takes a counted `child` (its tag as it was) off its parent's count.
  void Unlink(const Tag& child);
  // Erases the block at `pos` (noted), its parent losing a child; returns it.
  Block EraseAt(size_t pos);
  size_t RandomPosition();

  BucketTable<Tag> table_;
  uint64_t rng_ = 0x9e3779b97f4a7c15ULL;  // xorshift64* state; deterministic per map
  // The block whose child count last fell to zero: EvictOne's first try.
  std::optional<uint64_t> walk_;
  std::unique_ptr<Cut> cut_;  // null: no cut
};

}  // namespace kvindex
