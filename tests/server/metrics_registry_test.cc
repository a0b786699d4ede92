#include "server/metrics_registry.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/kvindex_metrics.h"
#include "tests/server/prometheus_text.h"

namespace kvindex {
namespace {

using ::kvindex::testing::ParsePrometheusText;
using ::kvindex::testing::PrometheusScrape;
using ::testing::HasSubstr;

TEST(MetricsRegistryTest, RendersFamiliesSortedWithHelpTypeAndLabels) {
  MetricsRegistry registry;
  CounterFamily& requests = registry.AddCounter("z_requests_total", "Requests by code.", {"code"});
  GaugeFamily& temperature = registry.AddGauge("a_temperature", "Current\\temperature\nin C.");
  requests.Get({"OK"}).Increment(3);
  requests.Get({"NOT_FOUND"}).Increment();
  temperature.Get({}).Set(21.5);
  EXPECT_EQ(registry.Render(),
            "# HELP a_temperature Current\\\\temperature\\nin C.\n"
            "# TYPE a_temperature gauge\n"
            "a_temperature 21.5\n"
            "# HELP z_requests_total Requests by code.\n"
            "# TYPE z_requests_total counter\n"
            "z_requests_total{code=\"NOT_FOUND\"} 1\n"
            "z_requests_total{code=\"OK\"} 3\n");
}

TEST(MetricsRegistryTest, UnlabelledFamiliesAreRenderedFromRegistration) {
  MetricsRegistry registry;
  registry.AddCounter("events_total", "Events.");
  registry.AddCounter("labelled_total", "Created on first use.", {"kind"});
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("\nevents_total 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE labelled_total counter\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("labelled_total{")));
}

TEST(MetricsRegistryTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry registry;
  Histogram& latency = registry.AddHistogram("latency_seconds", "Latency.", {0.1, 1}, {"rpc"}).Get({"Match"});
  for (double v : {0.05, 0.1, 0.5, 2.0}) latency.Observe(v);
  latency.Observe(std::nan(""));  // counted in +Inf; the sum becomes NaN
  const Histogram::Snapshot s = latency.Get();
  EXPECT_EQ(s.count, 5u);
  EXPECT_THAT(s.cumulative, ::testing::ElementsAre(2u, 3u, 5u));
  EXPECT_EQ(registry.Render(),
            "# HELP latency_seconds Latency.\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{rpc=\"Match\",le=\"0.1\"} 2\n"
            "latency_seconds_bucket{rpc=\"Match\",le=\"1\"} 3\n"
            "latency_seconds_bucket{rpc=\"Match\",le=\"+Inf\"} 5\n"
            "latency_seconds_sum{rpc=\"Match\"} NaN\n"
            "latency_seconds_count{rpc=\"Match\"} 5\n");
}

TEST(MetricsRegistryTest, LabelValuesAreEscaped) {
  MetricsRegistry registry;
  registry.AddGauge("g", "", {"pod"}).Get({"a\"b\\c\nd"}).Set(1);
  EXPECT_THAT(registry.Render(), HasSubstr("g{pod=\"a\\\"b\\\\c\\nd\"} 1\n"));
  absl::StatusOr<PrometheusScrape> parsed = ParsePrometheusText(registry.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Get("g{pod=\"a\\\"b\\\\c\\nd\"}"), 1.0);
}

TEST(MetricsRegistryTest, ValuesUseShortestRoundTripFormat) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(123456789012.0), "123456789012");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(5e-05), "5e-05");
  EXPECT_EQ(FormatMetricValue(0.0001), "0.0001");
  EXPECT_EQ(FormatMetricValue(-2.5), "-2.5");
  EXPECT_EQ(FormatMetricValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatMetricValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
}

TEST(MetricsRegistryTest, AdvanceToNeverLowersACounter) {
  Counter counter;
  counter.AdvanceTo(10);
  counter.AdvanceTo(4);
  EXPECT_EQ(counter.Value(), 10u);
  counter.Increment();
  EXPECT_EQ(counter.Value(), 11u);
}

TEST(MetricsRegistryTest, CollectorsRunBeforeEachRender) {
  MetricsRegistry registry;
  Gauge& gauge = registry.AddGauge("pulled", "").Get({});
  int calls = 0;
  registry.AddCollector([&] { gauge.Set(++calls); });
  EXPECT_THAT(registry.Render(), HasSubstr("pulled 1\n"));
  EXPECT_THAT(registry.Render(), HasSubstr("pulled 2\n"));
}

TEST(MetricsRegistryTest, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry registry;
  Counter& counter = registry.AddCounter("c_total", "").Get({});
  Histogram& histogram = registry.AddHistogram("h", "", {1}).Get({});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        counter.Increment();
        histogram.Observe(0.5);
      }
    });
  }
  std::thread scraper([&] {
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(ParsePrometheusText(registry.Render()).ok());
  });
  for (auto& t : threads) t.join();
  scraper.join();
  EXPECT_EQ(counter.Value(), 40000u);
  EXPECT_EQ(histogram.Get().count, 40000u);
  EXPECT_DOUBLE_EQ(histogram.Get().sum, 20000);
}

TEST(MetricsRegistryDeathTest, MisuseAbortsLoudly) {
  MetricsRegistry registry;
  registry.AddCounter("dup_total", "");
  EXPECT_DEATH(registry.AddCounter("dup_total", ""), "registered twice");
  EXPECT_DEATH(registry.AddGauge("bad-name", ""), "invalid metric name");
  EXPECT_DEATH(registry.AddHistogram("h", "", {1}, {"le"}), "invalid label name");
  EXPECT_DEATH(registry.AddHistogram("h2", "", {2, 1}), "strictly increasing");
  CounterFamily& family = registry.AddCounter("two_total", "", {"a", "b"});
  EXPECT_DEATH(family.Get({"x"}), "has 2 labels, got 1");
}

// Every family of KVINDEX_METRICS is rendered before anything happened, in
// valid exposition format, with the known label values at 0.
TEST(KvIndexMetricsTest, EveryMetricIsRegisteredAtStart) {
  KvIndexMetrics metrics;
  absl::StatusOr<PrometheusScrape> scrape = ParsePrometheusText(metrics.Render());
  ASSERT_TRUE(scrape.ok()) << scrape.status() << "\n" << metrics.Render();
  std::vector<std::string> names;
#define KVINDEX_NAME(member, name, ...) names.push_back(name);
  KVINDEX_METRICS(KVINDEX_NAME, KVINDEX_NAME, KVINDEX_NAME)
#undef KVINDEX_NAME
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end())) << "keep KVINDEX_METRICS sorted by name";
  for (const std::string& name : names) EXPECT_TRUE(scrape->types.contains(name)) << name;
  EXPECT_EQ(scrape->types.size(), names.size());
  EXPECT_EQ(scrape->Get("kvindex_events_total{type=\"block_stored\"}"), 0.0);
  EXPECT_EQ(scrape->Get("kvindex_decode_errors_total{reason=\"bad_token_count\"}"), 0.0);
  EXPECT_EQ(scrape->Get("kvindex_replays_total{result=\"timeout\"}"), 0.0);
  EXPECT_EQ(scrape->Get("kvindex_match_requests_total{code=\"INVALID_ARGUMENT\"}"), 0.0);
  EXPECT_EQ(scrape->Get("kvindex_workers{state=\"replaying\"}"), 0.0);
  EXPECT_EQ(scrape->Get("kvindex_event_lag_seconds_count"), 0.0);
  EXPECT_GT(scrape->Get("process_resident_memory_bytes").value_or(0), 0.0);
}

TEST(KvIndexMetricsTest, IngestionAndMatchAreCounted) {
  KvIndexMetrics metrics;
  EventBatch batch;
  batch.events = {BlockStored{}, BlockStored{}, BlockRemoved{}, AllBlocksCleared{}};
  batch.skipped_events = 1;
  metrics.OnBatchApplied(batch, ApplyResult{}, absl::Milliseconds(3));
  metrics.OnBatchApplied(batch, ApplyResult{}, std::nullopt);       // replayed: no lag
  metrics.OnBatchApplied(batch, ApplyResult{}, absl::Seconds(-1));  // engine clock ahead: first bucket
  metrics.OnBatchApplied(batch, ApplyResult{}, absl::InfiniteDuration());  // absurd engine ts: no lag
  metrics.OnDecodeError(DecodeErrorReason::kTruncated);
  metrics.OnFeedEvent(FeedEvent::kSeqGap);
  metrics.OnFeedEvent(FeedEvent::kReplayIncomplete);
  metrics.OnFeedEvent(FeedEvent::kEngineRestart);
  metrics.OnMatch(absl::StatusCode::kOk, absl::Microseconds(80));
  metrics.OnMatch(absl::StatusCode::kInvalidArgument, absl::Microseconds(10));
  absl::StatusOr<PrometheusScrape> s = ParsePrometheusText(metrics.Render());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->Get("kvindex_events_total{type=\"block_stored\"}"), 8.0);
  EXPECT_EQ(s->Get("kvindex_events_total{type=\"block_removed\"}"), 4.0);
  EXPECT_EQ(s->Get("kvindex_events_total{type=\"all_blocks_cleared\"}"), 4.0);
  EXPECT_EQ(s->Get("kvindex_events_total{type=\"unknown\"}"), 4.0);
  EXPECT_EQ(s->Get("kvindex_batches_total"), 4.0);
  EXPECT_EQ(s->Get("kvindex_event_lag_seconds_count"), 2.0);
  EXPECT_EQ(s->Get("kvindex_event_lag_seconds_bucket{le=\"0.001\"}"), 1.0);
  EXPECT_EQ(s->Get("kvindex_event_lag_seconds_bucket{le=\"0.005\"}"), 2.0);
  EXPECT_EQ(s->Get("kvindex_decode_errors_total{reason=\"truncated\"}"), 1.0);
  EXPECT_EQ(s->Get("kvindex_seq_gaps_total"), 1.0);
  EXPECT_EQ(s->Get("kvindex_replays_total{result=\"incomplete\"}"), 1.0);
  EXPECT_EQ(s->Get("kvindex_engine_restarts_total"), 1.0);
  EXPECT_EQ(s->Get("kvindex_match_requests_total{code=\"OK\"}"), 1.0);
  EXPECT_EQ(s->Get("kvindex_match_requests_total{code=\"INVALID_ARGUMENT\"}"), 1.0);
  EXPECT_EQ(s->Get("kvindex_match_latency_seconds_count"), 2.0);
  EXPECT_EQ(s->Get("kvindex_match_latency_seconds_bucket{le=\"0.0001\"}"), 2.0);
}

// What the index could not apply reaches the metrics, by reason, zero until it happens.
TEST(KvIndexMetricsTest, ApplySkipsAreCountedByReason) {
  KvIndexMetrics metrics;
  absl::StatusOr<PrometheusScrape> before = ParsePrometheusText(metrics.Render());
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->Get("kvindex_apply_skips_total{reason=\"unknown_removal\"}"), 0.0);
  EXPECT_EQ(before->Get("kvindex_apply_skips_total{reason=\"unindexed_block\"}"), 0.0);
  EXPECT_EQ(before->Get("kvindex_apply_skips_total{reason=\"unknown_chunk\"}"), 0.0);
  EventBatch batch;
  batch.events = {BlockRemoved{}};
  metrics.OnBatchApplied(batch, ApplyResult{.blocks_unindexed = 3, .unknown_removals = 2}, std::nullopt);
  metrics.OnBatchApplied(batch, ApplyResult{.unknown_removals = 1, .unknown_chunks = 4}, std::nullopt);
  absl::StatusOr<PrometheusScrape> after = ParsePrometheusText(metrics.Render());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->Get("kvindex_apply_skips_total{reason=\"unknown_removal\"}"), 3.0);
  EXPECT_EQ(after->Get("kvindex_apply_skips_total{reason=\"unindexed_block\"}"), 3.0);
  EXPECT_EQ(after->Get("kvindex_apply_skips_total{reason=\"unknown_chunk\"}"), 4.0);
}

TEST(PrometheusTextTest, RejectsWhatScrapersReject) {
  EXPECT_TRUE(ParsePrometheusText("# HELP a x\n# TYPE a counter\na 1\n").ok());
  EXPECT_FALSE(ParsePrometheusText("a 1").ok());                                  // no final newline
  EXPECT_FALSE(ParsePrometheusText("# TYPE a counter\na -1\n").ok());             // negative counter
  EXPECT_FALSE(ParsePrometheusText("a{b=\"x} 1\n").ok());                         // unterminated
  EXPECT_FALSE(ParsePrometheusText("a{b=\"\\t\"} 1\n").ok());                     // bad escape
  EXPECT_FALSE(ParsePrometheusText("a 1\na 2\n").ok());                           // duplicate series
  EXPECT_FALSE(ParsePrometheusText("a 1\nb 1\na{x=\"1\"} 1\n").ok());             // not contiguous
  EXPECT_FALSE(ParsePrometheusText("a one\n").ok());                              // bad value
  EXPECT_FALSE(ParsePrometheusText("a 1\n# TYPE a gauge\n").ok());                // TYPE late
  EXPECT_FALSE(ParsePrometheusText("# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"   // no +Inf
                                   "h_sum 1\nh_count 2\n")
                   .ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                                   "h_sum 1\nh_count 1\n")
                   .ok());  // not cumulative
}

}  // namespace
}  // namespace kvindex
