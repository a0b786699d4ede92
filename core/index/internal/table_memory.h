#pragma once

// TableMemory: zeroed, 128-byte-aligned memory for a hash table's arrays.
// From 16 KiB up it is a mapping of its own, unmapped when freed, so the
// process's RSS follows the tables' size: from the heap, a table that grew
// would leave its old array as a free hole the heap rarely gives back
// (measured: 84-107 B per entry resident for 34 B in use; with a 64 KiB
// threshold still 47 B). Below 16 KiB (a few hundred entries: the page
// rounding would cost more) it comes from the heap.
//
// A mapping reserves address space for four times its size (MAP_NORESERVE:
// not resident, and not committed unless the host overcommits strictly,
// vm.overcommit_memory=2, where it counts four times), so that Extend can
// grow it where it is: a table grown in place touches only its new pages.
// Fresh pages are what growth costs most on this machine kind: in this VM a
// 4 KiB page's first touch costs ~5 us, populated or not, while memory the
// process has touched before costs nothing (BENCHMARKS.md "Growing a table
// in place"). The whole 2 MiB ranges a mapping uses ask for transparent huge
// pages before they are populated (fewer TLB misses on random lookups, and
// one fault per 2 MiB), the rest of it for none; reservations of 2 MiB and
// more start on a 2 MiB boundary.

#include <cstddef>

namespace kvindex {

class TableMemory {
 public:
  static constexpr size_t kAlignment = 128;

  TableMemory() = default;
  explicit TableMemory(size_t bytes);  // throws std::bad_alloc when out of memory
  ~TableMemory();
  TableMemory(TableMemory&& other) noexcept;
  TableMemory& operator=(TableMemory&& other) noexcept;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

  // Whether Extend(bytes) can grow this memory where it is: a mapping whose
  // reservation holds `bytes`.
  bool CanExtend(size_t bytes) const { return reserved_ >= bytes && bytes >= bytes_; }
  // Grows the memory to `bytes` without moving it; the new part is zeroed
  // and resident. Requires CanExtend(bytes).
  void Extend(size_t bytes);

 private:
  void Release();

  void* data_ = nullptr;
  size_t bytes_ = 0;
  size_t reserved_ = 0;  // the mapping's address space; 0: from the heap
};

}  // namespace kvindex
