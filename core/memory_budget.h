#pragma once

// Turning a memory budget for the index into PrefixIndex caps, for
// kvindex-server's --index_memory_mb.

#include <cstdint>

#include "core/prefix_index.h"

namespace kvindex {

// Upper bound of index memory per (block, worker) entry, bytes: the block
// table slot, the worker's engine-hash map and holder lists, measured with
// bench/index_memory_bench and GetStats memory_bytes / entries, plus the
// slack of tables that grow by doubling.
inline constexpr uint64_t kIndexBytesPerEntry = 160;

// Most entries an index may hold to stay within `budget_bytes` (at least 1024).
uint64_t EntriesForMemoryBudget(uint64_t budget_bytes);

// `options` with max_entries (and max_blocks_per_worker) lowered, never
// raised, to what `budget_bytes` holds. budget_bytes 0 leaves them as they are.
IndexOptions WithMemoryBudget(IndexOptions options, uint64_t budget_bytes);

}  // namespace kvindex
