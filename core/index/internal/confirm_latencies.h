#pragma once

// ConfirmLatencies: one worker's recent confirmation latencies (RecordRouting
// of a block -> the engine's BlockStored of it applied) and the adaptive TTL
// they give: the kQuantile quantile of the last kSamples latencies times
// kSafetyFactor, clamped to [ttl_min, ttl_max]; `ttl` (the configured
// default) until kMinSamples exist. So a slow engine gets a longer TTL than a
// fast one, and a TTL follows an engine that slows down or speeds up within
// kSamples confirmations.
//
// Not thread-safe: SpeculativeTable guards it with its lock.

#include <array>
#include <cstddef>

#include "absl/time/time.h"

namespace kvindex {

class ConfirmLatencies {
 public:
  static constexpr size_t kSamples = 64;
  static constexpr size_t kMinSamples = 8;
  static constexpr double kQuantile = 0.95;
  static constexpr double kSafetyFactor = 2.0;

  // Records one confirmation's latency (negative ones count as 0).
  void Add(absl::Duration latency);

  // Latencies recorded, at most kSamples.
  size_t size() const { return size_; }

  // The TTL a hint given without one gets now (see above).
  absl::Duration Ttl(absl::Duration ttl, absl::Duration ttl_min, absl::Duration ttl_max) const;

 private:
  std::array<absl::Duration, kSamples> ring_{};
  size_t next_ = 0;
  size_t size_ = 0;
};

}  // namespace kvindex
