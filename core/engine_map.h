#pragma once

// EngineMap: one worker's engine blocks — engine hash -> (index hash, media) —
// with CLOCK (second-chance) eviction, the approximation of LRU that page
// caches use: storing a block marks it referenced; EvictOne() sweeps a hand
// over the table, clearing marks, and evicts the first unmarked block.
// 17 bytes a slot (ProbeTable<uint64_t> with the media and the mark in the tag).
// Not thread-safe.

#include <cstdint>
#include <optional>

#include "core/medium_table.h"
#include "core/probe_table.h"

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

  // The block stored under `engine`, if any.
  std::optional<Block> Find(uint64_t engine) const;

  // Stores (engine -> index, media), replacing what was there, and marks it referenced.
  void Put(uint64_t engine, uint64_t index, MediumMask media);

  // Changes the media of a present block without marking it (removal from a tier).
  void SetMedia(uint64_t engine, MediumMask media);

  // Forgets `engine`; returns whether it was present.
  bool Erase(uint64_t engine);

  // Removes and returns the CLOCK victim. Requires size() > 0.
  Block EvictOne();

  // Calls fn(const Block&) for every block.
  template <typename Fn>
  void ForEach(Fn fn) const {
    table_.ForEach([&](uint64_t engine, uint64_t index, uint8_t tag) {
      fn(Block{engine, index, static_cast<MediumMask>(tag & kMediaBits)});
    });
  }

  void Clear() { table_.Clear(); hand_ = 0; }

 private:
  static constexpr uint8_t kReferenced = 0x80;
  static constexpr uint8_t kMediaBits = 0x7f;
  static_assert(kMaxMedia <= 7, "the top tag bit is the CLOCK mark");

  ProbeTable<uint64_t> table_;
  size_t hand_ = 0;
};

}  // namespace kvindex
