#include "core/index/internal/medium_table.h"

namespace kvindex {

MediumTable::MediumTable() {
  names_[0] = "GPU";
  names_[1] = "CPU";
  names_[kOtherBit] = "OTHER";
  size_.store(2, std::memory_order_release);
}

std::optional<int> MediumTable::Find(std::string_view name) const {
  const int size = size_.load(std::memory_order_acquire);
  for (int b = 0; b < size; ++b) {
    if (names_[b] == name) return b;
  }
  if (name == names_[kOtherBit]) return kOtherBit;
  return std::nullopt;
}

MediumMask MediumTable::BitOf(const std::optional<std::string>& medium) {
  if (!medium) return 1;
  if (auto b = Find(*medium)) return MediumMask(1u << *b);
  absl::MutexLock lock(&mu_);
  if (auto b = Find(*medium)) return MediumMask(1u << *b);
  const int size = size_.load(std::memory_order_relaxed);
  if (size == kOtherBit) return MediumMask(1u << kOtherBit);
  names_[size] = *medium;
  size_.store(size + 1, std::memory_order_release);
  return MediumMask(1u << size);
}

const std::string& MediumTable::Name(int bit) const { return names_[bit]; }

}  // namespace kvindex
