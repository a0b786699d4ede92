#pragma once

// MediumTable: interns storage tier names ("GPU", "CPU", ...) to bits of a
// MediumMask, so a (block, worker) entry records its tiers in one byte.

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/synchronization/mutex.h"

namespace kvindex {

using MediumMask = uint8_t;
inline constexpr int kMaxMedia = 7;  // the eighth bit of a tag is EngineMap's second-chance mark

// Thread-safe; lookups are lock-free. Bit 0 is "GPU" (also used when an event
// names no medium), bit 1 "CPU", bit 6 "OTHER" (every name beyond the table's
// capacity); the bits between are assigned to new names in order of arrival.
class MediumTable {
 public:
  MediumTable();

  // Mask with the single bit of `medium` (nullopt: GPU); registers new names.
  MediumMask BitOf(const std::optional<std::string>& medium);

  // Bit index of a known name, nullopt when never seen.
  std::optional<int> Find(std::string_view name) const;

  // Name of bit `bit` (< kMaxMedia); empty when unassigned.
  const std::string& Name(int bit) const;

 private:
  static constexpr int kOtherBit = kMaxMedia - 1;
  std::array<std::string, kMaxMedia> names_;  // [0, size_) and kOtherBit are immutable once published
  std::atomic<int> size_{0};
  absl::Mutex mu_;  // serializes registration
};

}  // namespace kvindex
