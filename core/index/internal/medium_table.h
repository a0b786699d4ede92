#pragma once

// MediumTable: interns storage tier names ("GPU", "CPU", ...) to bits of a
// MediumMask, so a (block, worker) entry records its tiers in one byte.

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace kvindex {

using MediumMask = uint8_t;
inline constexpr int kMaxMedia = 7;  // the eighth bit of a tag is EngineMap's second-chance mark

// A tier is named by its medium, then "/REMOTE" when vLLM's locality says the
// copy is remote to the publisher, then "@<ownership>" when vLLM names the
// secondary offloading tier that owns it: "CPU", "CPU/REMOTE", "STORAGE@fs".
// SGLang's media (CPU_PINNED, DISK, EXTERNAL) are media like any other.
//
// Thread-safe; lookups are lock-free. Bit 0 is "GPU" (also used when an event
// names no medium), bit 1 "CPU", bit 6 "OTHER" (every name beyond the table's
// capacity); the bits between are assigned to new names in order of arrival.
class MediumTable {
 public:
  MediumTable();

  // Mask with the single bit of `medium` (nullopt: GPU); registers new names.
  MediumMask BitOf(const std::optional<std::string>& medium);

  // Mask with the single bit of the tier (medium, locality, ownership), named
  // as above; registers new names.
  MediumMask BitOf(const std::optional<std::string>& medium, const std::optional<std::string>& locality,
                   const std::optional<std::string>& ownership);

  // Calls fn(bit, name) for every named bit.
  template <typename Fn>
  void ForEach(Fn fn) const {
    const int size = size_.load(std::memory_order_acquire);
    for (int b = 0; b < size; ++b) fn(b, names_[b]);
    fn(kOtherBit, names_[kOtherBit]);
  }

  // The weight of tier `name` under `weights` keyed by medium ("CPU": every
  // locality) or medium and locality ("CPU/REMOTE": remote copies, over the
  // medium's key); 1.0 when neither is given.
  static double WeightOf(std::string_view name, const absl::flat_hash_map<std::string, double>& weights);

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
