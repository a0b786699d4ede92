#pragma once

// Turning a memory budget for the index into PrefixIndex caps, for
// kvindex-server's --index_memory_mb.

#include <cstdint>

#include "core/index/prefix_index.h"

namespace kvindex {

// Upper bound of index memory per (block, worker) entry, bytes. The worst
// layouts (bench/index_memory_bench measures 39-51 B/entry of RSS on average):
// a block only its worker holds, a 27-byte engine-map slot (parent and child
// count included) and a 16-byte block-table slot at the tables' least load
// after growth (0.95 / 1.2): 34.2 + 20.2 = 54 B; a block held by three, a
// 48-byte malloc'd list shared three ways: 34.2 + 6.7 + 16 = 57 B. Add the
// transient of the largest table's rehash (a worker holding all entries: old
// and new engine-map slots, +41 B) and the heap's fragmentation: 128 B.
inline constexpr uint64_t kIndexBytesPerEntry = 128;

// Upper bound of memory per speculative entry (RecordRouting), bytes:
// bench/index_memory_bench measures 228-361 B of RSS per entry
// (BENCHMARKS.md "Routing hints"), ~10x an engine entry.
inline constexpr uint64_t kSpeculativeBytesPerEntry = 400;
// The speculative entries may take at most this share of a budget (1/8).
inline constexpr uint64_t kSpeculativeBudgetDivisor = 8;

// Most entries an index may hold to stay within `budget_bytes` (at least 1024).
uint64_t EntriesForMemoryBudget(uint64_t budget_bytes);

// Most speculative entries a budget gives them: its 1/8 over
// kSpeculativeBytesPerEntry (at least 1).
uint64_t SpeculativeEntriesForMemoryBudget(uint64_t budget_bytes);

// `options` with its caps lowered, never raised, so that `budget_bytes` holds
// them all: speculative.max_entries to SpeculativeEntriesForMemoryBudget, then
// max_entries (and max_blocks_per_worker) to what the rest of the budget
// holds once the speculative cap's bytes are set aside. An unlimited cap (0)
// takes the budget's. budget_bytes 0 leaves them as they are.
IndexOptions WithMemoryBudget(IndexOptions options, uint64_t budget_bytes);

}  // namespace kvindex
