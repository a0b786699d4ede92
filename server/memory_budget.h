#pragma once

// Turning a memory budget for the index into PrefixIndex caps, for
// kvindex-server's --index_memory_mb.

#include <cstdint>

#include "core/index/prefix_index.h"

namespace kvindex {

// Upper bound of index memory per (block, worker) entry, bytes. The worst
// layouts (bench/index_memory_bench measures 28-39 B/entry of heap on average,
// up to 46 B of RSS before malloc_trim): a block only its worker holds, a
// 17-byte engine-map slot and a 16-byte block-table slot at the tables' least
// load after growth (0.95 / 1.2): 21.5 + 20.2 = 42 B; a block held by three, a
// 48-byte malloc'd list shared three ways: 21.5 + 6.7 + 16 = 44 B. Add the
// transient of the largest table's rehash (a worker holding all entries: old
// and new engine-map slots, +26 B) and the heap's fragmentation: 96 B.
inline constexpr uint64_t kIndexBytesPerEntry = 96;

// Most entries an index may hold to stay within `budget_bytes` (at least 1024).
uint64_t EntriesForMemoryBudget(uint64_t budget_bytes);

// `options` with max_entries (and max_blocks_per_worker) lowered, never
// raised, to what `budget_bytes` holds. budget_bytes 0 leaves them as they are.
IndexOptions WithMemoryBudget(IndexOptions options, uint64_t budget_bytes);

}  // namespace kvindex
