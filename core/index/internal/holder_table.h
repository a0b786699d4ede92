#pragma once

// HolderTable: index hash -> the workers holding that block, sorted by worker
// id, each with its media and alias count. A block held by one worker costs one
// 16-byte slot (the holder is packed into the slot's value), and so does one
// held by two (both packed, when neither has aliases and both worker ids are
// below 2^23: the common case of a prefix cached on two pods); a block held by
// more points to a heap list of 8-byte holders. Not thread-safe, except Prefetch.

#include <array>
#include <cstdint>
#include <type_traits>

#include "absl/types/span.h"
#include "core/index/internal/bucket_table.h"
#include "core/index/internal/medium_table.h"

namespace kvindex {

// Trivially comparable (no padding): Match compares holder lists with memcmp.
struct Holder {
  uint32_t worker;
  uint16_t refs;      // engine blocks of the worker that map to this block (> 1: aliases)
  MediumMask media;   // union of their media
  uint8_t zero = 0;

  friend bool operator==(const Holder&, const Holder&) = default;
};
static_assert(sizeof(Holder) == 8 && std::has_unique_object_representations_v<Holder>);

class HolderTable {
 public:
  HolderTable() = default;
  ~HolderTable();
  HolderTable(const HolderTable&) = delete;
  HolderTable& operator=(const HolderTable&) = delete;

  size_t size() const { return table_.size(); }  // blocks
  size_t MemoryBytes() const { return table_.MemoryBytes() + heap_bytes_; }

  // Starts loading x's slot; safe from any thread, without the table's lock
  // (see BucketTable::Prefetch).
  void Prefetch(uint64_t x) const { table_.Prefetch(x); }

  // Room for the holders packed in a slot.
  using Scratch = std::array<Holder, 2>;

  // Holders of `x` sorted by worker; empty when nobody holds it. `scratch`
  // backs packed holders. Valid until the next Update.
  absl::Span<const Holder> Find(uint64_t x, Scratch& scratch) const;

  // Digest(holders) for holders Find just returned with `scratch`, read from
  // their heap list's header; 0 when they are packed (in scratch) or none.
  static uint64_t ListDigest(absl::Span<const Holder> holders, const Scratch& scratch) {
    if (holders.empty() || holders.data() == scratch.data()) return 0;
    return (reinterpret_cast<const List*>(holders.data()) - 1)->digest;
  }

  // A 64-bit digest of a holder list (the XOR of a mix of each holder), kept
  // up to date in every heap list so that two long lists compare in O(1):
  // different digests mean different lists; equal ones, equal lists but for a
  // 2^-64 chance (the index's own odds: blocks are 64-bit hashes too).
  static uint64_t Digest(absl::Span<const Holder> holders);

  // Runs fn(Holder&) on `worker`'s holder of `x` — created with no refs and no
  // media when absent and `create` — then drops the holder if it has no refs
  // and the block if nobody holds it. Returns false, without calling fn, when
  // the holder is absent and !create.
  template <typename Fn>
  bool Update(uint64_t x, uint32_t worker, bool create, Fn fn) {
    Holder* h = Acquire(x, worker, create);
    if (h == nullptr) return false;
    fn(*h);
    Release();
    return true;
  }

 private:
  struct List {  // followed by `capacity` Holders
    uint32_t size;
    uint32_t capacity;
    uint64_t digest;  // Digest(items), except a holder between Acquire and Release
    Holder* items() { return reinterpret_cast<Holder*>(this + 1); }  // (ListDigest goes back from them)
  };

  // Slot values: 0 while being created; bit 0 set: one packed holder; low
  // bits 010: two packed holders (refs 1 each); else a List* (8-aligned).
  static bool IsPacked(uint64_t v) { return (v & 1) != 0; }
  static bool IsPair(uint64_t v) { return (v & 7) == 2; }
  static uint64_t Pack(const Holder& h);
  static Holder Unpack(uint64_t v);
  static bool Pairable(const Holder& a, const Holder& b);
  static uint64_t PackPair(const Holder& a, const Holder& b);  // requires Pairable(a, b)
  static Scratch UnpackPair(uint64_t v);

  List* NewList(uint32_t capacity);
  void FreeList(List* list);

  // Locates (creating if asked) the holder; Release() writes it back.
  Holder* Acquire(uint64_t x, uint32_t worker, bool create);
  void Release();

  BucketTable<NoTag> table_;
  size_t heap_bytes_ = 0;
  // The holders of the block between Acquire and Release: the heap list, or
  // (list_ == nullptr) the packed ones unpacked into inline_, with room for one more.
  size_t pos_ = 0;
  List* list_ = nullptr;
  uint32_t item_ = 0;
  std::array<Holder, 3> inline_{};
  uint32_t inline_size_ = 0;
};

}  // namespace kvindex
