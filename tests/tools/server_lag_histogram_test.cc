#include "tools/bench/server_lag_histogram.h"

#include <cmath>
#include <string>

#include "gtest/gtest.h"

namespace kvindex::bench {
namespace {

std::string Metrics(uint64_t le100us, uint64_t le1ms, uint64_t le10ms, uint64_t inf) {
  return "# HELP kvindex_event_lag_seconds lag\n"
         "# TYPE kvindex_event_lag_seconds histogram\n"
         "kvindex_event_lag_seconds_bucket{le=\"0.0001\"} " + std::to_string(le100us) + "\n" +
         "kvindex_event_lag_seconds_bucket{le=\"0.001\"} " + std::to_string(le1ms) + "\n" +
         "kvindex_event_lag_seconds_bucket{le=\"0.01\"} " + std::to_string(le10ms) + "\n" +
         "kvindex_event_lag_seconds_bucket{le=\"+Inf\"} " + std::to_string(inf) + "\n" +
         "kvindex_event_lag_seconds_sum 1.5\nkvindex_event_lag_seconds_count " + std::to_string(inf) + "\n" +
         "kvindex_other_bucket{le=\"1\"} 99\n";
}

// The histogram a scrape of Metrics(...) reads.
LagHistogram Scraped(uint64_t le100us, uint64_t le1ms, uint64_t le10ms, uint64_t inf) {
  return *ParseLagHistogram(Metrics(le100us, le1ms, le10ms, inf));
}

TEST(ServerLagHistogramTest, ReadsTheBucketsOfTheLagFamilyOnly) {
  absl::StatusOr<LagHistogram> h = ParseLagHistogram(Metrics(1, 2, 3, 4));
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->buckets.size(), 4u);
  EXPECT_DOUBLE_EQ(h->buckets[0].first, 0.0001);
  EXPECT_EQ(h->buckets[2].second, 3u);
  EXPECT_TRUE(std::isinf(h->buckets[3].first));
  EXPECT_EQ(ParseLagHistogram("kvindex_other_bucket{le=\"1\"} 99\n").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseLagHistogram("kvindex_event_lag_seconds_bucket{le=\"x\"} 1\n").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ServerLagHistogramTest, SummarizesOnlyTheBatchesBetweenTwoScrapes) {
  // Before: 100 batches all under 100 us. Then 100 more: 50 under 100 us, 49 in (0.1, 1] ms, 1 in (1, 10] ms.
  const LagHistogramSummary s = SummarizeBetween(Scraped(100, 100, 100, 100), Scraped(150, 199, 200, 200));
  EXPECT_EQ(s.batches, 100u);
  EXPECT_DOUBLE_EQ(s.within_1ms, 0.99);
  EXPECT_NEAR(s.p50_ms, 0.1, 1e-9);                    // the 50th batch: the top of the first bucket
  EXPECT_NEAR(s.p90_ms, 0.1 + 0.9 * 40.0 / 49, 1e-9);  // interpolated in (0.1, 1] ms
  EXPECT_NEAR(s.p99_ms, 1.0, 1e-9);
}

TEST(ServerLagHistogramTest, AQuantileInTheInfiniteBucketIsTheLastFiniteBound) {
  const LagHistogramSummary s = SummarizeBetween(Scraped(0, 0, 0, 0), Scraped(0, 0, 0, 10));
  EXPECT_EQ(s.batches, 10u);
  EXPECT_DOUBLE_EQ(s.p99_ms, 10.0);
  EXPECT_DOUBLE_EQ(s.within_1ms, 0.0);
  EXPECT_EQ(SummarizeBetween(Scraped(0, 0, 0, 10), Scraped(0, 0, 0, 10)).batches, 0u);
}

}  // namespace
}  // namespace kvindex::bench
