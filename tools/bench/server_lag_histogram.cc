#include "tools/bench/server_lag_histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "httplib.h"

namespace kvindex::bench {
namespace {

constexpr absl::string_view kBucketPrefix = "kvindex_event_lag_seconds_bucket{le=\"";

// The q-quantile of the (upper bound, count in bucket) histogram, interpolated
// linearly inside its bucket; the last finite bound when it falls in +Inf.
double Quantile(const std::vector<std::pair<double, uint64_t>>& counts, uint64_t total, double q) {
  const double rank = q * static_cast<double>(total);
  double below = 0, lower = 0;  // batches in the buckets before; the bound those end at
  for (const auto& [le, n] : counts) {
    if (std::isinf(le)) return lower;
    if (below + static_cast<double>(n) >= rank && n > 0) {
      return lower + (le - lower) * (rank - below) / static_cast<double>(n);
    }
    below += static_cast<double>(n);
    lower = le;
  }
  return lower;
}

}  // namespace

absl::StatusOr<LagHistogram> ParseLagHistogram(absl::string_view metrics_text) {
  LagHistogram h;
  for (absl::string_view line : absl::StrSplit(metrics_text, '\n')) {
    if (!absl::ConsumePrefix(&line, kBucketPrefix)) continue;
    const size_t quote = line.find("\"} ");
    double le = 0, count = 0;
    if (quote == absl::string_view::npos || !absl::SimpleAtod(line.substr(quote + 3), &count)) {
      return absl::InvalidArgumentError(absl::StrCat("unreadable bucket line: ", line));
    }
    const absl::string_view bound = line.substr(0, quote);
    if (bound == "+Inf") {
      le = std::numeric_limits<double>::infinity();
    } else if (!absl::SimpleAtod(bound, &le)) {
      return absl::InvalidArgumentError(absl::StrCat("unreadable bucket bound: ", bound));
    }
    h.buckets.emplace_back(le, static_cast<uint64_t>(count));
  }
  if (h.buckets.empty()) return absl::NotFoundError("no kvindex_event_lag_seconds histogram in /metrics");
  std::sort(h.buckets.begin(), h.buckets.end());
  return h;
}

absl::StatusOr<LagHistogram> ScrapeLagHistogram(const std::string& address) {
  httplib::Client client(absl::StrCat("http://", address));
  client.set_connection_timeout(2);
  client.set_read_timeout(5);
  const httplib::Result response = client.Get("/metrics");
  if (!response) {
    return absl::UnavailableError(absl::StrCat("GET http://", address, "/metrics: ", httplib::to_string(response.error())));
  }
  if (response->status != 200) {
    return absl::UnavailableError(absl::StrCat("GET http://", address, "/metrics: HTTP ", response->status));
  }
  return ParseLagHistogram(response->body);
}

LagHistogramSummary SummarizeBetween(const LagHistogram& before, const LagHistogram& after) {
  // Per-bucket counts of the batches in between.
  std::vector<std::pair<double, uint64_t>> counts;
  uint64_t previous = 0;
  for (size_t i = 0; i < after.buckets.size(); ++i) {
    const auto& [le, cumulative] = after.buckets[i];
    const uint64_t earlier = i < before.buckets.size() ? before.buckets[i].second : 0;
    const uint64_t now = cumulative >= earlier ? cumulative - earlier : 0;
    counts.emplace_back(le, now >= previous ? now - previous : 0);
    previous = std::max(previous, now);
  }
  LagHistogramSummary s;
  s.batches = previous;
  if (s.batches == 0) return s;
  s.p50_ms = Quantile(counts, s.batches, 0.50) * 1e3;
  s.p90_ms = Quantile(counts, s.batches, 0.90) * 1e3;
  s.p99_ms = Quantile(counts, s.batches, 0.99) * 1e3;
  uint64_t within = 0;
  for (const auto& [le, n] : counts) within += le <= 0.001 + 1e-12 ? n : 0;
  s.within_1ms = static_cast<double>(within) / static_cast<double>(s.batches);
  return s;
}

}  // namespace kvindex::bench
