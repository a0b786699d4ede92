#include "core/index/internal/confirm_latencies.h"

#include <algorithm>
#include <cmath>

namespace kvindex {

void ConfirmLatencies::Add(absl::Duration latency) {
  ring_[next_] = std::max(latency, absl::ZeroDuration());
  next_ = (next_ + 1) % kSamples;
  size_ = std::min(size_ + 1, kSamples);
}

absl::Duration ConfirmLatencies::Ttl(absl::Duration ttl, absl::Duration ttl_min, absl::Duration ttl_max) const {
  if (size_ < kMinSamples) return ttl;
  std::array<absl::Duration, kSamples> sorted = ring_;
  // Nearest rank: the smallest sample at or above kQuantile of them.
  const size_t rank = static_cast<size_t>(std::ceil(kQuantile * static_cast<double>(size_)));
  const size_t k = std::min(size_, std::max<size_t>(rank, 1)) - 1;
  std::nth_element(sorted.begin(), sorted.begin() + k, sorted.begin() + size_);
  return std::clamp(sorted[k] * kSafetyFactor, ttl_min, std::max(ttl_min, ttl_max));
}

}  // namespace kvindex
