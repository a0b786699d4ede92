#pragma once

// The server's own event-lag histogram (kvindex_event_lag_seconds: batch ts ->
// applied, i.e. visible in Match, for every live batch of every pod), scraped
// from its /metrics, and the percentiles of the batches between two scrapes.
// It is exact where the Match probe (lag_probe.h) can only bracket the lag
// between two polls, but it is coarse: percentiles are interpolated within
// buckets (as Prometheus' histogram_quantile does).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvindex::bench {

struct LagHistogram {
  // (upper bound in seconds, cumulative count), ascending; +Inf last.
  std::vector<std::pair<double, uint64_t>> buckets;
};

// The histogram in a /metrics text; NOT_FOUND when it has no such family.
[[nodiscard]] absl::StatusOr<LagHistogram> ParseLagHistogram(absl::string_view metrics_text);

// GET http://`address`/metrics ("host:port") and ParseLagHistogram.
[[nodiscard]] absl::StatusOr<LagHistogram> ScrapeLagHistogram(const std::string& address);

struct LagHistogramSummary {
  uint64_t batches = 0;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0;  // capped at the last finite bound
  double within_1ms = 0;                       // fraction of batches with lag <= 1 ms
};

// The batches observed after `before` and up to `after` (same buckets).
LagHistogramSummary SummarizeBetween(const LagHistogram& before, const LagHistogram& after);

}  // namespace kvindex::bench
