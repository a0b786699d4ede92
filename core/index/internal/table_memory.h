#pragma once

// TableMemory: zeroed, 128-byte-aligned memory for a hash table's arrays.
// From 16 KiB up it is a mapping of its own, unmapped when freed, so the
// process's RSS follows the tables' size: from the heap, a table that grew
// would leave its old array as a free hole the heap rarely gives back
// (measured: 84-107 B per entry resident for 34 B in use; with a 64 KiB
// threshold still 47 B). Mappings of 2 MiB and more start on a 2 MiB boundary
// and ask for transparent huge pages before they are populated (fewer TLB
// misses on random lookups; BENCHMARKS.md "Scale"). Below 16 KiB (a few hundred
// entries: the page rounding would cost more) it comes from the heap.

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

 private:
  void Release();

  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool mapped_ = false;
};

}  // namespace kvindex
