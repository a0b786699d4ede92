#pragma once

// BucketTable<Tag>: a compact hash map from uint64 keys to uint64 values
// (plus, unless Tag is NoTag, a Tag per entry: a small trivially copyable
// value), built for the index's memory budget and its cache misses: 16 bytes
// an entry (plus sizeof(Tag)) at loads up to 0.95, no per-entry allocation,
// and a lookup touches at most three cache lines (plus the tag's: one, two
// when it straddles a line).
//
// Bucketized cuckoo hashing: a key lives in one of two buckets (both chosen by
// its hash) of eight slots; a bucket is two 64-byte cache lines, its keys and
// then their values. A lookup reads the keys of both buckets at most, and the
// found key's value; an insert takes a free slot in the emptier bucket, or
// frees one by moving entries, each to its other bucket, along the shortest
// path a bounded breadth-first search finds (eight-slot buckets need one far
// less often than four-slot ones); an erase clears the slot and moves
// nothing. The table grows by x1.2 when it would pass 0.95 full (or no path
// is found) and shrinks when under 1/8 full, so its load stays in 0.79-0.95
// (mean ~0.87); an entry moves ~5 times while a table grows to its size, in
// streaming passes (see PutBeside), mostly in place: the bucket array's
// TableMemory extends where it is, so a growth touches only its new pages.
// Tags live in an array of their own (sizeof(Tag) per slot; a zeroed Tag is
// a free slot's). The arrays are TableMemory: RSS follows the size.
//
// Keys are stored mixed (MurmurHash3's fmix64, a bijection, undone by KeyAt;
// engine hashes may be small integers); a free slot holds mixed key 0, so the
// one key that mixes to 0 (key 0) is kept beside the buckets, at position
// capacity(). Positions are [0, end()); a position stays valid until the next
// Insert (EraseAt moves nothing unless it shrinks the table). Not thread-safe,
// except Prefetch.
//
// Pinning (a copy of the table taken in steps, EngineMap's cut): Pin() fixes
// the arrays the table uses at that instant for ForEachPinned, until Unpin().
// Meanwhile (1) each entry an Insert moves from one slot of the pinned arrays
// to another (a cuckoo path) has its key appended to the pin's log, and
// (2) when the table leaves the pinned arrays (it grows, shrinks or is
// cleared) it keeps them rather than freeing them, and never writes them
// again. So an entry that is neither inserted, erased nor moved since Pin()
// stays at the pinned position it had then, whatever else the table does,
// and ForEachPinned reads it there (with its value and tag as they read at
// that moment: SetValueAt/SetTagAt are the owner's to log). Key 0 has no
// position in the arrays: ForEachPinned never reports it. Costs nothing
// unpinned but a null test per moved entry; pinned, the kept arrays until
// Unpin().

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <type_traits>
#include <vector>

#include "absl/numeric/int128.h"
#include "core/index/internal/table_memory.h"

namespace kvindex {

// The Tag of an untagged BucketTable.
struct NoTag {};

template <typename Tag>
class BucketTable {
  static_assert(std::is_trivially_copyable_v<Tag>);
  static constexpr bool kTagged = !std::is_same_v<Tag, NoTag>;

 public:
  static constexpr size_t kNpos = ~size_t{0};
  static constexpr size_t kSlots = 8;  // per bucket

  BucketTable() = default;
  BucketTable(BucketTable&& other) noexcept { *this = std::move(other); }
  // Moves the entries; a pin stays with its table, which keeps the arrays it
  // loses when they are pinned. (Moving out of a pinned table leaves its pin
  // on arrays now in use elsewhere: only Rehash does, and it keeps them.)
  BucketTable& operator=(BucketTable&& other) noexcept {
    KeepPinnedArrays(bucket_memory_, tag_memory_, buckets_);
    bucket_memory_ = std::move(other.bucket_memory_);
    tag_memory_ = std::move(other.tag_memory_);
    buckets_ = std::exchange(other.buckets_, nullptr);
    tags_ = std::exchange(other.tags_, nullptr);
    bucket_count_ = std::exchange(other.bucket_count_, 0);
    size_ = std::exchange(other.size_, 0);
    zero_ = std::exchange(other.zero_, Zero{});
    PublishLayout();
    other.PublishLayout();
    return *this;
  }

  size_t size() const { return size_; }
  size_t capacity() const { return bucket_count_ * kSlots; }  // slots in buckets
  size_t end() const { return capacity() + 1; }                // positions: the slots, then key 0's
  size_t MemoryBytes() const { return bucket_count_ * (sizeof(Bucket) + (kTagged ? kSlots * sizeof(Tag) : 0)); }

  // Starts loading the lines a lookup of `key` reads, so that the cache misses
  // of a batch of lookups overlap. Safe to call concurrently with any other
  // call, from any thread: it reads the table's address atomically (a stale or
  // torn pair only makes a useless prefetch), computes addresses as integers
  // (no pointer into a table that may be gone), and a prefetch never faults.
  void Prefetch(uint64_t key) const {
    const size_t count = prefetch_count_.load(std::memory_order_relaxed);
    const uintptr_t buckets = prefetch_buckets_.load(std::memory_order_relaxed);
    if (count == 0 || buckets == 0) return;
    const uint64_t mixed = Mix(key);
    const size_t b1 = First(mixed, count);
    const size_t b2 = Second(mixed, count);
    auto line = [](uintptr_t address) { __builtin_prefetch(reinterpret_cast<const void*>(address)); };
    line(buckets + b1 * sizeof(Bucket));                            // keys
    line(buckets + b1 * sizeof(Bucket) + offsetof(Bucket, value));  // values
    line(buckets + b2 * sizeof(Bucket));
    line(buckets + b2 * sizeof(Bucket) + offsetof(Bucket, value));
    if constexpr (kTagged) {
      if (const uintptr_t tags = prefetch_tags_.load(std::memory_order_relaxed); tags != 0) line(tags + b1 * kSlots * sizeof(Tag));
    }
  }

  // Position of `key`, or kNpos.
  size_t Find(uint64_t key) const {
    const uint64_t mixed = Mix(key);
    if (mixed == 0) return zero_.used ? capacity() : kNpos;
    if (bucket_count_ == 0) return kNpos;
    if (const size_t pos = FindIn(First(mixed, bucket_count_), mixed); pos != kNpos) return pos;
    return FindIn(Second(mixed, bucket_count_), mixed);
  }

  // Position of `key`; when absent, inserts it with value 0 and tag 0 and sets
  // *inserted. May move any entry.
  size_t Insert(uint64_t key, bool* inserted) {
    const size_t found = Find(key);
    *inserted = found == kNpos;
    if (found != kNpos) return found;
    const uint64_t mixed = Mix(key);
    ++size_;
    if (mixed == 0) {
      zero_ = Zero{.value = 0, .tag = Tag{}, .used = true};
      return capacity();
    }
    if ((size_ - zero_.used) * 20 > capacity() * 19) Rehash(GrownBucketCount());
    for (;;) {
      if (const size_t pos = Place(mixed); pos != kNpos) return pos;
      Rehash(GrownBucketCount());  // no path within the search bound (rare below 0.95 full)
    }
  }

  // Grows the table at once to hold `n` entries at a load of 0.9 (so that
  // inserting them rehashes nothing); no-op when it already can. May move any entry.
  void Reserve(size_t n) {
    const size_t buckets = n * 10 / (9 * kSlots) + 1;
    if (buckets > bucket_count_) Rehash(buckets);
  }

  // Removes the entry at `pos`. Moves nothing, unless the table shrinks.
  void EraseAt(size_t pos) {
    --size_;
    if (pos == capacity()) {
      zero_ = Zero{};
      return;
    }
    Bucket& b = buckets_[pos / kSlots];
    b.key[pos % kSlots] = 0;
    b.value[pos % kSlots] = 0;
    if constexpr (kTagged) tags_[pos] = Tag{};
    if (capacity() > 64 && size_ * 8 < capacity()) Rehash(size_ * 2 / kSlots + 1);
  }

  void Clear() { *this = BucketTable(); }

  bool Used(size_t pos) const { return pos == capacity() ? zero_.used : buckets_[pos / kSlots].key[pos % kSlots] != 0; }
  uint64_t KeyAt(size_t pos) const { return pos == capacity() ? 0 : Unmix(buckets_[pos / kSlots].key[pos % kSlots]); }
  uint64_t ValueAt(size_t pos) const {
    return pos == capacity() ? zero_.value : buckets_[pos / kSlots].value[pos % kSlots];
  }
  void SetValueAt(size_t pos, uint64_t value) {
    (pos == capacity() ? zero_.value : buckets_[pos / kSlots].value[pos % kSlots]) = value;
  }
  Tag TagAt(size_t pos) const
    requires kTagged
  {
    return pos == capacity() ? zero_.tag : tags_[pos];
  }
  void SetTagAt(size_t pos, Tag tag)
    requires kTagged
  {
    (pos == capacity() ? zero_.tag : tags_[pos]) = tag;
  }

  // Pins the current arrays (see the header); `moved` receives the keys of
  // entries moved between pinned slots, and must outlive the pin. Replaces
  // any earlier pin.
  void Pin(std::vector<uint64_t>* moved) {
    pin_ = std::make_unique<Pinned>();
    pin_->buckets = buckets_;
    pin_->tags = tags_;
    pin_->capacity = capacity();
    pin_->moved = moved;
  }
  // The pinned arrays' memory once the table has left them (empty otherwise).
  struct Kept {
    TableMemory buckets;
    TableMemory tags;
  };
  // Ends the pin; returns what it kept (the caller chooses when it is freed).
  Kept Unpin() {
    if (pin_ == nullptr) return {};
    Kept kept{std::move(pin_->kept_buckets), std::move(pin_->kept_tags)};
    pin_.reset();
    return kept;
  }
  // Positions of the pinned arrays: [0, PinnedEnd()). 0 when not pinned.
  size_t PinnedEnd() const { return pin_ == nullptr ? 0 : pin_->capacity; }
  // Calls fn(key, value, tag) for each entry at pinned positions [from, to)
  // as it reads now (NoTag{} when untagged). Requires to <= PinnedEnd().
  template <typename Fn>
  void ForEachPinned(size_t from, size_t to, Fn fn) const {
    for (size_t pos = from; pos < to; ++pos) {
      const Bucket& b = pin_->buckets[pos / kSlots];
      if (b.key[pos % kSlots] == 0) continue;
      Tag tag{};
      if constexpr (kTagged) tag = pin_->tags[pos];
      fn(Unmix(b.key[pos % kSlots]), uint64_t(b.value[pos % kSlots]), tag);
    }
  }

  // Calls fn(key, value, tag) for every entry (NoTag{} when untagged).
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (size_t pos = 0; pos < capacity(); ++pos) {
      const Bucket& b = buckets_[pos / kSlots];
      if (b.key[pos % kSlots] == 0) continue;
      fn(Unmix(b.key[pos % kSlots]), uint64_t(b.value[pos % kSlots]), TagOf(pos));
    }
    if (zero_.used) fn(uint64_t{0}, uint64_t(zero_.value), Tag(zero_.tag));
  }

 private:
  struct alignas(128) Bucket {
    uint64_t key[kSlots];  // mixed; 0: free
    uint64_t value[kSlots];
  };
  static_assert(sizeof(Bucket) == 128 && alignof(Bucket) <= TableMemory::kAlignment);
  struct Zero {
    uint64_t value = 0;
    Tag tag{};
    bool used = false;
  };
  // The arrays as of Pin(): owned by the table while it uses them, then by the pin.
  struct Pinned {
    const Bucket* buckets = nullptr;
    const Tag* tags = nullptr;
    size_t capacity = 0;
    std::vector<uint64_t>* moved = nullptr;
    TableMemory kept_buckets;  // the pinned arrays once the table has left them
    TableMemory kept_tags;
  };
  // Breadth-first search bound: ~3 levels of eight-way fan-out from two buckets.
  static constexpr size_t kMaxSearch = 160;

  static uint64_t Mix(uint64_t k) {  // MurmurHash3's fmix64
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
  // The two buckets of a mixed key, in [0, count): from its high and its low half.
  static size_t First(uint64_t mixed, size_t count) {
    return static_cast<size_t>(absl::Uint128High64(absl::uint128(mixed) * count));
  }
  static size_t Second(uint64_t mixed, size_t count) {
    return static_cast<size_t>(absl::Uint128High64(absl::uint128((mixed << 32) | (mixed >> 32)) * count));
  }
  size_t Other(uint64_t mixed, size_t bucket) const {
    const size_t first = First(mixed, bucket_count_);
    return first == bucket ? Second(mixed, bucket_count_) : first;
  }

  size_t FindIn(size_t bucket, uint64_t mixed) const {
    const Bucket& b = buckets_[bucket];
    for (size_t s = 0; s < kSlots; ++s) {
      if (b.key[s] == mixed) return bucket * kSlots + s;
    }
    return kNpos;
  }
  size_t FreeSlot(size_t bucket) const {
    const Bucket& b = buckets_[bucket];
    for (size_t s = 0; s < kSlots; ++s) {
      if (b.key[s] == 0) return s;
    }
    return kSlots;
  }
  size_t FreeSlots(size_t bucket) const {
    const Bucket& b = buckets_[bucket];
    size_t free = 0;
    for (size_t s = 0; s < kSlots; ++s) free += b.key[s] == 0;
    return free;
  }
  Tag TagOf(size_t pos) const {
    if constexpr (kTagged) return tags_[pos];
    return Tag{};
  }
  void MoveSlot(size_t from, size_t to) {
    Bucket& src = buckets_[from / kSlots];
    Bucket& dst = buckets_[to / kSlots];
    if (pin_ != nullptr && pin_->buckets == buckets_) pin_->moved->push_back(Unmix(src.key[from % kSlots]));
    dst.key[to % kSlots] = std::exchange(src.key[from % kSlots], 0);
    dst.value[to % kSlots] = std::exchange(src.value[from % kSlots], 0);
    if constexpr (kTagged) tags_[to] = std::exchange(tags_[from], Tag{});
  }

  // Puts an absent non-zero mixed key into a free slot of one of its buckets,
  // moving entries along a path to a free slot when both are full. Returns its
  // position (value and tag 0), or kNpos when no path was found (nothing moved).
  size_t Place(uint64_t mixed) {
    struct Node {
      uint32_t bucket;
      int32_t parent;  // -1: one of the key's own buckets
      uint32_t slot;   // the slot of the parent's bucket whose entry moves here
    };
    Node nodes[kMaxSearch];
    size_t count = 0;
    const size_t first = First(mixed, bucket_count_), second = Second(mixed, bucket_count_);
    nodes[count++] = Node{static_cast<uint32_t>(first), -1, 0};
    if (second != first) nodes[count++] = Node{static_cast<uint32_t>(second), -1, 0};
    if (count == 2 && FreeSlots(second) > FreeSlots(first)) std::swap(nodes[0], nodes[1]);  // the emptier first
    for (size_t n = 0; n < count; ++n) {
      const size_t free = FreeSlot(nodes[n].bucket);
      if (free != kSlots) {
        // Move each entry on the path into the slot its successor left.
        size_t to = nodes[n].bucket * kSlots + free;
        for (int32_t at = static_cast<int32_t>(n); nodes[at].parent >= 0; at = nodes[at].parent) {
          const size_t from = nodes[nodes[at].parent].bucket * kSlots + nodes[at].slot;
          MoveSlot(from, to);
          to = from;
        }
        buckets_[to / kSlots].key[to % kSlots] = mixed;
        return to;
      }
      for (uint32_t s = 0; s < kSlots && count < kMaxSearch; ++s) {
        const size_t next = Other(buckets_[nodes[n].bucket].key[s], nodes[n].bucket);
        if (OnPath(nodes, static_cast<int32_t>(n), next)) continue;  // a path visits a bucket once
        __builtin_prefetch(buckets_[next].key);  // the level's buckets load in parallel
        nodes[count++] = Node{static_cast<uint32_t>(next), static_cast<int32_t>(n), s};
      }
    }
    return kNpos;
  }
  template <typename Node>
  static bool OnPath(const Node* nodes, int32_t at, size_t bucket) {
    for (; at >= 0; at = nodes[at].parent) {
      if (nodes[at].bucket == bucket) return true;
    }
    return false;
  }

  size_t GrownBucketCount() const { return bucket_count_ + std::max<size_t>(1, bucket_count_ / 5); }

  // Resizes the table to `bucket_count` buckets (more, when entries do not
  // fit). Grows in place when the bucket array's memory can be extended and
  // is not pinned; otherwise moves the entries into fresh arrays.
  void Rehash(size_t bucket_count) {
    const bool pinned = pin_ != nullptr && pin_->buckets == buckets_;
    if (!pinned && bucket_count > bucket_count_ && bucket_memory_.CanExtend(bucket_count * sizeof(Bucket))) {
      GrowInPlace(bucket_count);
    } else {
      Refill(bucket_count);
    }
    PublishLayout();
  }

  // An entry on its way to a slot: its mixed key, value and tag.
  struct Moving {
    uint64_t mixed;
    uint64_t value;
    Tag tag;
  };
  // Both ways of resizing move entries the same way, in one streaming pass:
  // an entry of bucket b (of `old_count`) is there as its first or as its
  // second bucket, and its bucket of the same role in the resized table is
  // ~b x (bucket_count_ / old_count) (both are range reductions of a fixed
  // 64-bit value), so reading the buckets in order (or from the last down)
  // writes them in the same order. It goes
  // to a free slot there; false when there is none (a few percent when
  // growing: up to eight old entries meet ~6.3 new places on average). Placing
  // every entry by a search, its two buckets at random, cost ~60 ns an entry.
  bool PutBeside(const Moving& e, size_t b, size_t old_count) {
    const size_t to = First(e.mixed, old_count) == b ? First(e.mixed, bucket_count_) : Second(e.mixed, bucket_count_);
    const size_t free = FreeSlot(to);
    if (free == kSlots) return false;
    Put(to * kSlots + free, e);
    return true;
  }
  void Put(size_t pos, const Moving& e) {
    buckets_[pos / kSlots].key[pos % kSlots] = e.mixed;
    buckets_[pos / kSlots].value[pos % kSlots] = e.value;
    if constexpr (kTagged) tags_[pos] = e.tag;
  }
  // Places the entries PutBeside could not, by cuckoo searches, growing the
  // table when one finds no path (rare below 0.95 full).
  void PutAll(const std::vector<Moving>& entries) {
    for (const Moving& e : entries) {
      size_t pos;
      while ((pos = Place(e.mixed)) == kNpos) Rehash(GrownBucketCount());
      Put(pos, e);
    }
  }

  // Grows the table to `bucket_count` buckets where its bucket array is
  // (the tags, when theirs cannot grow, move to a new array on the way).
  // Buckets are emptied from the last down: an entry of bucket b goes to a
  // bucket >= b, which is b itself (emptied just before) or one emptied and
  // refilled already, or new.
  void GrowInPlace(size_t bucket_count) {
    const size_t old_count = bucket_count_;
    bucket_memory_.Extend(bucket_count * sizeof(Bucket));
    Tag* const old_tags = tags_;
    TableMemory new_tags;
    if constexpr (kTagged) {
      const size_t tag_bytes = bucket_count * kSlots * sizeof(Tag);
      if (tag_memory_.CanExtend(tag_bytes)) {
        tag_memory_.Extend(tag_bytes);
      } else {
        new_tags = TableMemory(tag_bytes);
        tags_ = static_cast<Tag*>(new_tags.data());
      }
    }
    bucket_count_ = bucket_count;
    std::vector<Moving> overflow;
    for (size_t b = old_count; b-- > 0;) {
      Moving moving[kSlots];
      size_t n = 0;
      Bucket& from = buckets_[b];
      for (size_t s = 0; s < kSlots; ++s) {
        if (from.key[s] == 0) continue;
        moving[n].mixed = std::exchange(from.key[s], 0);
        moving[n].value = std::exchange(from.value[s], 0);
        if constexpr (kTagged) moving[n].tag = std::exchange(old_tags[b * kSlots + s], Tag{});
        ++n;
      }
      for (size_t i = 0; i < n; ++i) {
        if (!PutBeside(moving[i], b, old_count)) overflow.push_back(moving[i]);
      }
    }
    if constexpr (kTagged) {
      if (new_tags.data() != nullptr) tag_memory_ = std::move(new_tags);
    }
    PutAll(overflow);
  }

  // Moves the entries into fresh arrays of `bucket_count` buckets.
  void Refill(size_t bucket_count) {
    BucketTable old = std::move(*this);
    size_ = old.size_;
    zero_ = old.zero_;
    bucket_memory_ = TableMemory(bucket_count * sizeof(Bucket));  // zeroed: all free
    buckets_ = static_cast<Bucket*>(bucket_memory_.data());
    if constexpr (kTagged) {
      tag_memory_ = TableMemory(bucket_count * kSlots * sizeof(Tag));
      tags_ = static_cast<Tag*>(tag_memory_.data());
    }
    bucket_count_ = bucket_count;
    std::vector<Moving> overflow;
    for (size_t b = 0; b < old.bucket_count_; ++b) {
      for (size_t s = 0; s < kSlots; ++s) {
        const size_t pos = b * kSlots + s;
        if (old.buckets_[b].key[s] == 0) continue;
        const Moving e{old.buckets_[b].key[s], old.buckets_[b].value[s], old.TagOf(pos)};
        if (!PutBeside(e, b, old.bucket_count_)) overflow.push_back(e);
      }
    }
    KeepPinnedArrays(old.bucket_memory_, old.tag_memory_, old.buckets_);
    PutAll(overflow);
  }
  // When `buckets` are the pinned arrays, hands their memory to the pin.
  void KeepPinnedArrays(TableMemory& bucket_memory, TableMemory& tag_memory, const Bucket* buckets) {
    if (pin_ == nullptr || buckets == nullptr || pin_->buckets != buckets) return;
    pin_->kept_buckets = std::move(bucket_memory);
    pin_->kept_tags = std::move(tag_memory);
  }

  // Makes the buckets' address and count visible to Prefetch.
  void PublishLayout() {
    prefetch_buckets_.store(reinterpret_cast<uintptr_t>(buckets_), std::memory_order_relaxed);
    if constexpr (kTagged) prefetch_tags_.store(reinterpret_cast<uintptr_t>(tags_), std::memory_order_relaxed);
    prefetch_count_.store(bucket_count_, std::memory_order_relaxed);
  }

  TableMemory bucket_memory_;
  TableMemory tag_memory_;
  Bucket* buckets_ = nullptr;  // in bucket_memory_
  Tag* tags_ = nullptr;        // in tag_memory_; kTagged: one per slot
  size_t bucket_count_ = 0;
  size_t size_ = 0;  // key 0 included
  Zero zero_;
  // buckets_, tags_ and bucket_count_ for Prefetch, which may run on other threads.
  std::atomic<uintptr_t> prefetch_buckets_{0};
  std::atomic<uintptr_t> prefetch_tags_{0};
  std::atomic<size_t> prefetch_count_{0};
  std::unique_ptr<Pinned> pin_;  // null: not pinned
};

}  // namespace kvindex
