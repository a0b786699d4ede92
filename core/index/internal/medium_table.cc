#include "core/index/internal/medium_table.h"

#include "absl/strings/str_cat.h"

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

MediumMask MediumTable::BitOf(const std::optional<std::string>& medium, const std::optional<std::string>& locality,
                              const std::optional<std::string>& ownership) {
  const bool remote = locality.has_value() && *locality == "REMOTE";
  if (!remote && !ownership) return BitOf(medium);  // the common case: no string built
  std::string name = medium.value_or("GPU");
  if (remote) name += "/REMOTE";
  if (ownership) absl::StrAppend(&name, "@", *ownership);
  return BitOf(name);
}

double MediumTable::WeightOf(std::string_view name, const absl::flat_hash_map<std::string, double>& weights) {
  const size_t end = name.find_first_of("/@");
  const std::string_view medium = name.substr(0, end);
  double weight = 1.0;
  if (auto it = weights.find(absl::string_view(medium.data(), medium.size())); it != weights.end()) weight = it->second;
  if (name.substr(medium.size()).starts_with("/REMOTE")) {
    if (auto it = weights.find(absl::StrCat(absl::string_view(medium.data(), medium.size()), "/REMOTE"));
        it != weights.end()) {
      weight = it->second;
    }
  }
  return weight;
}

const std::string& MediumTable::Name(int bit) const { return names_[bit]; }

}  // namespace kvindex
