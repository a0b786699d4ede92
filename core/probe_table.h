#pragma once

// ProbeTable<V>: a compact open-addressing map from uint64 keys to a small
// trivially-copyable V plus a one-byte non-zero tag per entry, built for the
// index's memory budget: a slot costs 8 + sizeof(V) + 1 bytes, with no
// per-entry allocation.
//
// Keys are stored mixed (MurmurHash3's fmix64, a bijection, undone by KeyAt),
// so probing never rehashes a resident key.
// Invariants: Robin Hood linear probing from Home(key) — along a probe run,
// entries are ordered by home, so a lookup stops at the first entry that is
// closer to its home than the key would be; a slot is free iff its tag is 0;
// deletion shifts the rest of the run back (no tombstones). The load stays
// <= 0.85 (growth x1.5) and the table shrinks when under 1/8 full.
// Positions are valid until the next Insert or EraseAt. Not thread-safe,
// except Prefetch.
// A slot is 8 + sizeof(V) + 1 bytes, packed (x86 and ARMv8 load unaligned words natively).

#include <atomic>
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
  static constexpr size_t kPrefetchLines = 4;

  ProbeTable() = default;
  ProbeTable(ProbeTable&& other) noexcept { *this = std::move(other); }
  ProbeTable& operator=(ProbeTable&& other) noexcept {
    capacity_ = std::exchange(other.capacity_, 0);
    size_ = std::exchange(other.size_, 0);
    slots_ = std::move(other.slots_);
    PublishLayout();
    other.PublishLayout();
    return *this;
  }

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  size_t MemoryBytes() const { return capacity_ * sizeof(Slot); }

  // Starts loading the slot where a lookup of `key` begins, so that the cache
  // misses of a batch of lookups overlap. Safe to call concurrently with any
  // other call, from any thread: it reads the table's address atomically (a
  // stale or torn pair only makes a useless prefetch), and a prefetch never
  // faults. Callers prefetch a batch before taking the lock of the lookups.
  void Prefetch(uint64_t key) const {
    const size_t capacity = prefetch_capacity_.load(std::memory_order_relaxed);
    if (capacity == 0) return;
    const char* slot = prefetch_base_.load(std::memory_order_relaxed) + HomeIn(Mix(key), capacity) * sizeof(Slot);
    for (size_t line = 0; line < kPrefetchLines; ++line) __builtin_prefetch(slot + 64 * line);
  }

  // Position of `key`, or kNpos.
  size_t Find(uint64_t key) const {
    if (capacity_ == 0) return kNpos;
    const Probe p = Locate(Mix(key));
    return p.found ? p.pos : kNpos;
  }

  // Position of `key`; when absent, inserts it with a value-initialized V and
  // `tag` (non-zero) and sets *inserted. May move every entry.
  size_t Insert(uint64_t key, uint8_t tag, bool* inserted) {
    const uint64_t mixed = Mix(key);
    if (capacity_ != 0) {
      const Probe p = Locate(mixed);
      if (p.found) {
        *inserted = false;
        return p.pos;
      }
      *inserted = true;
      if ((size_ + 1) * 20 <= capacity_ * 17) {  // room: insert where the lookup stopped
        ++size_;
        return Place(mixed, V{}, tag, p.pos, p.dist);
      }
    }
    *inserted = true;
    Rehash(capacity_ < 8 ? 8 : capacity_ + capacity_ * 3 / 10);
    ++size_;
    return Place(mixed, V{}, tag, Home(mixed), 0);
  }

  // Removes the entry at `pos`. May move every entry.
  void EraseAt(size_t pos) {
    size_t hole = pos;
    for (size_t j = Next(hole); slots_[j].tag != 0 && Distance(j) > 0; j = Next(j)) {
      slots_[hole] = slots_[j];
      hole = j;
    }
    slots_[hole].tag = 0;
    --size_;
    if (capacity_ > 64 && size_ * 8 < capacity_) Rehash(size_ * 2 < 8 ? 8 : size_ * 2);
  }

  void Clear() { *this = ProbeTable(); }

  uint64_t KeyAt(size_t pos) const { return Unmix(slots_[pos].key); }
  V ValueAt(size_t pos) const { return slots_[pos].value; }
  void SetValueAt(size_t pos, V value) { slots_[pos].value = value; }
  uint8_t TagAt(size_t pos) const { return slots_[pos].tag; }
  void SetTagAt(size_t pos, uint8_t tag) { slots_[pos].tag = tag; }  // tag != 0
  bool Used(size_t pos) const { return slots_[pos].tag != 0; }

  // Calls fn(key, value, tag) for every entry.
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (size_t i = 0; i < capacity_; ++i) {
      if (slots_[i].tag != 0) fn(Unmix(slots_[i].key), V(slots_[i].value), uint8_t(slots_[i].tag));
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
  static uint64_t Unmix(uint64_t k) {  // the inverse: x ^= x >> 33 undoes itself; odd multipliers invert mod 2^64
    k ^= k >> 33;
    k *= 0x9cb4b2f8129337dbULL;
    k ^= k >> 33;
    k *= 0x4f74430c22a54005ULL;
    return k ^ (k >> 33);
  }
  // Home slot of a mixed key, in [0, capacity).
  static size_t HomeIn(uint64_t mixed, size_t capacity) {
    return static_cast<size_t>(absl::Uint128High64(absl::uint128(mixed) * capacity));
  }
  size_t Home(uint64_t mixed) const { return HomeIn(mixed, capacity_); }
  size_t Next(size_t i) const { return i + 1 == capacity_ ? 0 : i + 1; }
  // How far the entry at `pos` sits from its home.
  size_t Distance(size_t pos) const {
    const size_t home = Home(slots_[pos].key);
    return pos >= home ? pos - home : pos + capacity_ - home;
  }

  // Where a lookup of a mixed key stopped: at the key (found), or at the slot
  // where Robin Hood insertion of it starts (free, or held by an entry closer
  // to its home than `dist`). Requires capacity_ > 0.
  struct Probe {
    size_t pos;
    size_t dist;
    bool found;
  };
  Probe Locate(uint64_t mixed) const {
    size_t i = Home(mixed);
    size_t dist = 0;
    for (; slots_[i].tag != 0 && Distance(i) >= dist; i = Next(i), ++dist) {
      if (slots_[i].key == mixed) return {i, dist, true};
    }
    return {i, dist, false};
  }

  // Robin Hood insertion of an absent mixed key into a table with a free slot,
  // from slot `i` at distance `dist` from its home (where its lookup stopped,
  // or its home); returns where the key landed (entries it displaced move further along).
  size_t Place(uint64_t key, V value, uint8_t tag, size_t i, size_t dist) {  // key is mixed
    size_t landed = kNpos;
    for (;; i = Next(i), ++dist) {
      if (slots_[i].tag == 0) {
        slots_[i] = Slot{key, value, tag};
        return landed == kNpos ? i : landed;
      }
      const size_t resident = Distance(i);
      if (resident < dist) {  // take the slot from the richer entry and carry it on
        const Slot displaced = slots_[i];
        slots_[i] = Slot{key, value, tag};
        key = displaced.key;
        value = displaced.value;
        tag = displaced.tag;
        if (landed == kNpos) landed = i;
        dist = resident;
      }
    }
  }

  void Rehash(size_t capacity) {
    ProbeTable old = std::move(*this);
    capacity_ = capacity;
    size_ = old.size_;
    slots_ = std::make_unique<Slot[]>(capacity);  // zeroed: all free
    for (size_t i = 0; i < old.capacity_; ++i) {
      const Slot& slot = old.slots_[i];
      if (slot.tag != 0) Place(slot.key, slot.value, slot.tag, Home(slot.key), 0);
    }
    PublishLayout();
  }

  // Makes the slots' address and capacity visible to Prefetch.
  void PublishLayout() {
    prefetch_base_.store(reinterpret_cast<const char*>(slots_.get()), std::memory_order_relaxed);
    prefetch_capacity_.store(capacity_, std::memory_order_relaxed);
  }

  size_t capacity_ = 0;
  size_t size_ = 0;
  // Key, value and tag packed in one slot: a lookup costs one cache miss (two
  // when a slot straddles lines) and no padding is paid.
  struct __attribute__((packed)) Slot {
    uint64_t key;  // mixed
    V value;
    uint8_t tag;
  };
  std::unique_ptr<Slot[]> slots_;
  // slots_ and capacity_ for Prefetch, which may run on other threads.
  std::atomic<const char*> prefetch_base_{nullptr};
  std::atomic<size_t> prefetch_capacity_{0};
};

}  // namespace kvindex
