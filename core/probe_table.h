#pragma once

// ProbeTable<V>: a compact open-addressing map from uint64 keys to a small
// trivially-copyable V plus a one-byte non-zero tag per entry, built for the
// index's memory budget: a slot costs 8 + sizeof(V) + 1 bytes, with no
// per-entry allocation.
//
// Invariants: linear probing from Home(key); a slot is free iff its tag is 0;
// deletion shifts later entries of the probe run back (no tombstones), so every
// entry sits between its home and the first free slot after it. The load stays
// <= 4/5 (growth x1.5) and the table shrinks when under 1/8 full.
// Positions are valid until the next Insert or EraseAt. Not thread-safe.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

#include "absl/numeric/int128.h"

namespace kvindex {

template <typename V>
class ProbeTable {
  static_assert(std::is_trivially_copyable_v<V>);

 public:
  static constexpr size_t kNpos = ~size_t{0};

  ProbeTable() = default;
  ProbeTable(ProbeTable&& other) noexcept { *this = std::move(other); }
  ProbeTable& operator=(ProbeTable&& other) noexcept {
    capacity_ = std::exchange(other.capacity_, 0);
    size_ = std::exchange(other.size_, 0);
    keys_ = std::move(other.keys_);
    values_ = std::move(other.values_);
    tags_ = std::move(other.tags_);
    return *this;
  }

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  size_t MemoryBytes() const { return capacity_ * (sizeof(uint64_t) + sizeof(V) + 1); }

  // Position of `key`, or kNpos.
  size_t Find(uint64_t key) const {
    if (capacity_ == 0) return kNpos;
    for (size_t i = Home(key);; i = Next(i)) {
      if (tags_[i] == 0) return kNpos;
      if (keys_[i] == key) return i;
    }
  }

  // Position of `key`; when absent, inserts it with a value-initialized V and
  // `tag` (non-zero) and sets *inserted. May move every entry.
  size_t Insert(uint64_t key, uint8_t tag, bool* inserted) {
    if ((size_ + 1) * 5 > capacity_ * 4) Rehash(capacity_ < 8 ? 8 : capacity_ + capacity_ / 2);
    size_t i = Home(key);
    for (; tags_[i] != 0; i = Next(i)) {
      if (keys_[i] == key) {
        *inserted = false;
        return i;
      }
    }
    keys_[i] = key;
    values_[i] = V{};
    tags_[i] = tag;
    ++size_;
    *inserted = true;
    return i;
  }

  // Removes the entry at `pos`. May move every entry.
  void EraseAt(size_t pos) {
    size_t hole = pos;
    for (size_t j = Next(hole); tags_[j] != 0; j = Next(j)) {
      const size_t home = Home(keys_[j]);
      // Entry j may fill the hole unless its home lies cyclically in (hole, j].
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      keys_[hole] = keys_[j];
      values_[hole] = values_[j];
      tags_[hole] = tags_[j];
      hole = j;
    }
    tags_[hole] = 0;
    --size_;
    if (capacity_ > 64 && size_ * 8 < capacity_) Rehash(size_ * 2 < 8 ? 8 : size_ * 2);
  }

  void Clear() { *this = ProbeTable(); }

  uint64_t KeyAt(size_t pos) const { return keys_[pos]; }
  V& ValueAt(size_t pos) { return values_[pos]; }
  const V& ValueAt(size_t pos) const { return values_[pos]; }
  uint8_t& TagAt(size_t pos) { return tags_[pos]; }
  uint8_t TagAt(size_t pos) const { return tags_[pos]; }
  bool Used(size_t pos) const { return tags_[pos] != 0; }

  // Calls fn(key, value, tag) for every entry.
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (size_t i = 0; i < capacity_; ++i) {
      if (tags_[i] != 0) fn(keys_[i], values_[i], tags_[i]);
    }
  }

 private:
  static uint64_t Mix(uint64_t k) {  // MurmurHash3's fmix64: engine hashes may be small integers
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    return k ^ (k >> 33);
  }
  size_t Home(uint64_t key) const {
    return static_cast<size_t>(absl::Uint128High64(absl::uint128(Mix(key)) * capacity_));  // in [0, capacity)
  }
  size_t Next(size_t i) const { return i + 1 == capacity_ ? 0 : i + 1; }

  void Rehash(size_t capacity) {
    ProbeTable old = std::move(*this);
    capacity_ = capacity;
    size_ = 0;
    keys_ = std::make_unique_for_overwrite<uint64_t[]>(capacity);
    values_ = std::make_unique_for_overwrite<V[]>(capacity);
    tags_ = std::make_unique<uint8_t[]>(capacity);  // zeroed: all free
    for (size_t i = 0; i < old.capacity_; ++i) {
      if (old.tags_[i] == 0) continue;
      size_t j = Home(old.keys_[i]);
      while (tags_[j] != 0) j = Next(j);
      keys_[j] = old.keys_[i];
      values_[j] = old.values_[i];
      tags_[j] = old.tags_[i];
      ++size_;
    }
  }

  size_t capacity_ = 0;
  size_t size_ = 0;
  std::unique_ptr<uint64_t[]> keys_;
  std::unique_ptr<V[]> values_;
  std::unique_ptr<uint8_t[]> tags_;
};

}  // namespace kvindex
