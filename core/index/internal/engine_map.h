#pragma once

// EngineMap: one worker's engine blocks — engine hash -> (index hash, media) —
// with second-chance eviction, an approximation of LRU: storing a block marks
// it; EvictOne() looks at blocks at random positions, clearing the marks it
// finds, and evicts the first unmarked one (random positions keep the
// buckets' load even, where a CLOCK hand would empty one region at a time).
// 17 bytes a slot (a tagged BucketTable: the media and the mark in the tag).
// Not thread-safe.

#include <cstdint>
#include <optional>

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

  void Clear() { table_.Clear(); }

 private:
  static constexpr uint8_t kMarked = 0x80;
  static constexpr uint8_t kMediaBits = 0x7f;
  static_assert(kMaxMedia <= 7, "the top tag bit is the second-chance mark");

  size_t RandomPosition();

  BucketTable</*kTagged=*/true> table_;
  uint64_t rng_ = 0x9e3779b97f4a7c15ULL;  // xorshift64* state; deterministic per map
};

}  // namespace kvindex
