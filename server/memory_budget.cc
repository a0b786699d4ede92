#include "server/memory_budget.h"

#include <algorithm>

namespace kvindex {

uint64_t EntriesForMemoryBudget(uint64_t budget_bytes) {
  return std::max<uint64_t>(budget_bytes / kIndexBytesPerEntry, 1024);
}

IndexOptions WithMemoryBudget(IndexOptions options, uint64_t budget_bytes) {
  if (budget_bytes == 0) return options;
  const uint64_t cap = EntriesForMemoryBudget(budget_bytes);
  options.max_entries = options.max_entries == 0 ? cap : std::min<uint64_t>(options.max_entries, cap);
  options.max_blocks_per_worker =
      options.max_blocks_per_worker == 0 ? cap : std::min<uint64_t>(options.max_blocks_per_worker, cap);
  return options;
}

}  // namespace kvindex
