#include "server/memory_budget.h"

#include <algorithm>

namespace kvindex {

uint64_t EntriesForMemoryBudget(uint64_t budget_bytes) {
  return std::max<uint64_t>(budget_bytes / kIndexBytesPerEntry, 1024);
}

uint64_t SpeculativeEntriesForMemoryBudget(uint64_t budget_bytes) {
  return std::max<uint64_t>(budget_bytes / kSpeculativeBudgetDivisor / kSpeculativeBytesPerEntry, 1);
}

namespace {

// `cap` lowered to `limit`; an unlimited cap (0) becomes `limit`.
template <typename T>
T Lowered(T cap, uint64_t limit) {
  return cap == 0 ? static_cast<T>(limit) : static_cast<T>(std::min<uint64_t>(cap, limit));
}

}  // namespace

IndexOptions WithMemoryBudget(IndexOptions options, uint64_t budget_bytes) {
  if (budget_bytes == 0) return options;
  options.speculative.max_entries =
      Lowered(options.speculative.max_entries, SpeculativeEntriesForMemoryBudget(budget_bytes));
  const uint64_t speculative_bytes = options.speculative.max_entries * kSpeculativeBytesPerEntry;
  const uint64_t cap = EntriesForMemoryBudget(budget_bytes > speculative_bytes ? budget_bytes - speculative_bytes : 0);
  options.max_entries = Lowered(options.max_entries, cap);
  options.max_blocks_per_worker = Lowered(options.max_blocks_per_worker, cap);
  return options;
}

}  // namespace kvindex
