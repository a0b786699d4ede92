// GET /metrics of a real server: an in-process KvIndexServer fed by a fake
// vLLM engine over ZeroMQ and called over gRPC, scraped over HTTP on
// 127.0.0.1 before and after traffic; and the kvindex-server process's
// --metrics_listen. Every scrape must parse as Prometheus text.

#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/kvindex_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "server/kvindex_server.h"
#include "server/memory_budget.h"
#include "tests/core/ingest/fake_engine.h"
#include "tests/server/prometheus_text.h"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"

namespace kvindex::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kModel[] = "llama-3-8b";
constexpr uint32_t kBlockSize = 16;
constexpr uint32_t kBlocks = 6;

// GET http://127.0.0.1:port/path: (status, body, content type); status -1 when the request failed.
struct HttpAnswer {
  int status = -1;
  std::string body;
  std::string content_type;
};
HttpAnswer Get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(10, 0);
  httplib::Result result = client.Get(path);
  if (!result) return {};
  return {result->status, result->body, result->get_header_value("Content-Type")};
}

// Wall clock, seconds since the epoch (a batch's ts).
double NowSeconds() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

// Scrapes and parses; fails the test when the text is not valid.
PrometheusScrape Scrape(int port) {
  const HttpAnswer answer = Get(port, "/metrics");
  EXPECT_EQ(answer.status, 200);
  absl::StatusOr<PrometheusScrape> parsed = ParsePrometheusText(answer.body);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << answer.body;
  return parsed.ok() ? *std::move(parsed) : PrometheusScrape{};
}

double Value(const PrometheusScrape& scrape, const std::string& series) {
  std::optional<double> v = scrape.Get(series);
  EXPECT_TRUE(v.has_value()) << series << " missing";
  return v.value_or(-1);
}

class MetricsTest : public ::testing::Test {
 protected:
  // Changes the in-process server's options before it starts.
  virtual void Configure(server::ServerOptions& options) {}

  void SetUp() override {
    absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create({});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    // These tests count replays exactly: no catch-up replay (its own tests are
    // subscriber_test's) may land among them on a slow machine.
    options.manager.catch_up_after = absl::InfiniteDuration();
    Configure(options);
    absl::StatusOr<std::unique_ptr<server::KvIndexServer>> server = server::KvIndexServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->metrics_port(), 0);
    absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client =
        client::KvIndexClient::Create({.server = absl::StrCat("127.0.0.1:", server_->port())});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  Pod EnginePod() const {
    Pod pod;
    pod.ns = "default";
    pod.name = "vllm-0";
    pod.ip = engine_->host();
    pod.phase = "Running";
    pod.labels[kKvEventsEnabledLabel] = "true";
    pod.labels[kModelNameKey] = kModel;
    pod.events_port = engine_->events_port();
    pod.replay_port = engine_->replay_port();
    return pod;
  }

  // The single worker's status once `pred` holds for it.
  bool WaitForWorker(const std::function<bool(const WorkerStatus&)>& pred) {
    return WaitFor([&] {
      std::vector<PodStatus> pods = server_->pods().ListPods();
      return pods.size() == 1 && pods[0].workers.size() == 1 && pred(pods[0].workers[0]);
    });
  }

  v1::MatchRequest CanonicalMatch() const {
    v1::MatchRequest request;
    request.set_model(kModel);
    for (uint32_t t : PromptTokens(kBlocks, kBlockSize)) request.add_token_ids(t);
    return request;
  }

  std::unique_ptr<FakeEngine> engine_;
  std::unique_ptr<server::KvIndexServer> server_;
  std::unique_ptr<client::KvIndexClient> client_;
};

TEST_F(MetricsTest, ValuesMoveWithTrafficAndCountersSurvivePodDeletion) {
  // Before anything: every family is there, at zero.
  const PrometheusScrape before = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(before, "kvindex_events_total{type=\"block_stored\"}"), 0);
  EXPECT_EQ(Value(before, "kvindex_index_entries"), 0);
  EXPECT_EQ(Value(before, "kvindex_match_latency_seconds_count"), 0);
  EXPECT_EQ(Value(before, "kvindex_event_lag_seconds_count"), 0);
  EXPECT_EQ(Value(before, "kvindex_workers{state=\"live\"}"), 0);
  EXPECT_GT(Value(before, "kvindex_index_memory_bytes"), 0);  // the empty tables' shards
  EXPECT_EQ(Value(before, "kvindex_index_medium_entries{medium=\"GPU\"}"), 0);
  EXPECT_EQ(Value(before, "kvindex_index_medium_entries{medium=\"CPU\"}"), 0);

  // A pod subscribes and warms up (replay from 0: nothing yet), then the
  // engine stores a prompt block by block, stamped with the current time.
  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.replays_ok == 1 && w.state == WorkerState::kLive; }));
  for (uint32_t k = 0; k < kBlocks; ++k) {
    engine_->Publish(ChainBlockPayload(k, kBlockSize, NowSeconds()));
  }
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.batches == kBlocks; }));

  // Three Match calls answer, one is refused.
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<v1::MatchResponse> match = client_->Match(CanonicalMatch());
    ASSERT_TRUE(match.ok()) << match.status();
    ASSERT_EQ(match->pods_size(), 1);
    EXPECT_EQ(match->pods(0).matched_blocks(), kBlocks);
  }
  v1::MatchRequest empty_model = CanonicalMatch();
  empty_model.clear_model();
  EXPECT_EQ(client_->Match(empty_model).status().code(), absl::StatusCode::kInvalidArgument);

  const PrometheusScrape after = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(after, "kvindex_events_total{type=\"block_stored\"}"), kBlocks);
  EXPECT_EQ(Value(after, "kvindex_batches_total"), kBlocks);
  EXPECT_EQ(Value(after, "kvindex_event_lag_seconds_count"), kBlocks);
  EXPECT_LT(Value(after, "kvindex_event_lag_seconds_sum"), kBlocks * 10.0);  // seconds, not a clock mix-up
  EXPECT_EQ(Value(after, "kvindex_index_blocks"), kBlocks);
  EXPECT_EQ(Value(after, "kvindex_index_entries"), kBlocks);
  EXPECT_EQ(Value(after, "kvindex_index_medium_entries{medium=\"GPU\"}"), kBlocks);
  EXPECT_EQ(Value(after, "kvindex_match_requests_total{code=\"OK\"}"), 3);
  EXPECT_EQ(Value(after, "kvindex_match_requests_total{code=\"INVALID_ARGUMENT\"}"), 1);
  EXPECT_EQ(Value(after, "kvindex_match_latency_seconds_count"), 4);
  EXPECT_GT(Value(after, "kvindex_match_latency_seconds_sum"), 0);
  EXPECT_EQ(Value(after, "kvindex_replays_total{result=\"ok\"}"), 1);
  EXPECT_EQ(Value(after, "kvindex_workers{state=\"live\"}"), 1);
  EXPECT_EQ(Value(after, "kvindex_pods{subscribed=\"true\"}"), 1);
  EXPECT_GT(Value(after, "kvindex_index_memory_bytes"), 0);

  // The engine restarts, then the pod is deleted: state gauges drop, counters do not.
  engine_->Restart();
  engine_->Publish(ChainBlockPayload(0, kBlockSize, NowSeconds()));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.restarts == 1 && w.batches == kBlocks + 1; }));
  ASSERT_EQ(server_->pods().Delete("default/vllm-0").outcome, PodOutcome::kRemoved);
  ASSERT_TRUE(WaitFor([&] { return server_->index().Stats().entries == 0; }));
  const PrometheusScrape deleted = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(deleted, "kvindex_engine_restarts_total"), 1);
  EXPECT_EQ(Value(deleted, "kvindex_events_total{type=\"block_stored\"}"), kBlocks + 1);
  EXPECT_EQ(Value(deleted, "kvindex_batches_total"), kBlocks + 1);
  EXPECT_EQ(Value(deleted, "kvindex_replays_total{result=\"ok\"}"), 1);
  EXPECT_EQ(Value(deleted, "kvindex_match_requests_total{code=\"OK\"}"), 3);
  EXPECT_EQ(Value(deleted, "kvindex_index_entries"), 0);
  EXPECT_EQ(Value(deleted, "kvindex_index_medium_entries{medium=\"GPU\"}"), 0);
  EXPECT_EQ(Value(deleted, "kvindex_workers{state=\"live\"}"), 0);
  EXPECT_EQ(Value(deleted, "kvindex_pods{subscribed=\"true\"}"), 0);
}

TEST_F(MetricsTest, DecodeErrorsAndBadFramesAreCountedByReason) {
  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.state == WorkerState::kLive; }));
  engine_->Publish(std::string("\x92\xcb", 2));  // [float64 ... cut short
  engine_->SendRaw({"", "not-a-seq", "payload"});
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.decode_errors == 1 && w.bad_frames == 1; }));
  const PrometheusScrape scrape = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(scrape, "kvindex_decode_errors_total{reason=\"truncated\"}"), 1);
  EXPECT_EQ(scrape.Sum("kvindex_decode_errors_total"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_bad_frames_total"), 1);
}

// Block k of the canonical prompt, chained to block k-1, stored on `medium`.
std::string BlockOn(uint32_t k, const std::string& medium) {
  const std::vector<uint32_t> all = PromptTokens(k + 1, kBlockSize);
  std::optional<uint64_t> parent;
  if (k > 0) parent = kChainHashBase + k - 1;
  return PayloadBuilder()
      .Stored({kChainHashBase + k}, parent, std::vector<uint32_t>(all.begin() + k * kBlockSize, all.end()),
              kBlockSize, medium)
      .Build(NowSeconds());
}

// The replay that a gap starts brings back the batch that revealed the gap,
// so that batch, held meanwhile, is skipped as already applied: one gap, one
// duplicate, nothing lost.
TEST_F(MetricsTest, CoveredGapCountsTheGapAndTheDuplicate) {
  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.replays_ok == 1 && w.state == WorkerState::kLive; }));
  engine_->Publish(ChainBlockPayload(0, kBlockSize, NowSeconds()));
  engine_->Publish(ChainBlockPayload(1, kBlockSize, NowSeconds()));
  engine_->PublishLost(ChainBlockPayload(2, kBlockSize, NowSeconds()));
  engine_->Publish(ChainBlockPayload(3, kBlockSize, NowSeconds()));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.duplicates == 1 && w.replays_ok == 2; }));

  const PrometheusScrape scrape = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(scrape, "kvindex_seq_gaps_total"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_duplicate_batches_total"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_replays_total{result=\"ok\"}"), 2);
  EXPECT_EQ(Value(scrape, "kvindex_replays_total{result=\"incomplete\"}"), 0);
  EXPECT_EQ(Value(scrape, "kvindex_uncovered_gaps_total"), 0);
  EXPECT_EQ(Value(scrape, "kvindex_dropped_batches_total"), 0);
  EXPECT_EQ(Value(scrape, "kvindex_batches_total"), 4);
  EXPECT_EQ(Value(scrape, "kvindex_event_lag_seconds_count"), 2) << "replayed batches have no lag";
  EXPECT_EQ(Value(scrape, "kvindex_index_entries"), 4);
  EXPECT_EQ(Value(scrape, "kvindex_index_unresolved_parents_total"), 0);
}

// A gap the engine's buffer no longer holds: the worker is cleared and the
// gap counted as uncovered; the batch after the hole chains to a block nobody
// holds any more, so it is counted as an unresolved parent and not indexed.
TEST_F(MetricsTest, UncoveredGapClearsTheWorkerAndIsCounted) {
  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.replays_ok == 1 && w.state == WorkerState::kLive; }));
  engine_->Publish(ChainBlockPayload(0, kBlockSize, NowSeconds()));
  engine_->Publish(ChainBlockPayload(1, kBlockSize, NowSeconds()));
  ASSERT_TRUE(WaitFor([&] { return server_->index().Stats().entries == 2; }));
  engine_->PublishLost(ChainBlockPayload(2, kBlockSize, NowSeconds()));
  engine_->ForgetBefore(3);  // seq 2 fell out of the engine's buffer
  engine_->Publish(ChainBlockPayload(3, kBlockSize, NowSeconds()));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) {
    return w.uncovered_gaps == 1 && w.replays_failed == 1 && w.duplicates == 1;
  }));

  const PrometheusScrape scrape = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(scrape, "kvindex_seq_gaps_total"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_uncovered_gaps_total"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_replays_total{result=\"incomplete\"}"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_replays_total{result=\"timeout\"}"), 0);
  EXPECT_EQ(Value(scrape, "kvindex_replays_total{result=\"ok\"}"), 1);  // the first subscription's
  EXPECT_EQ(Value(scrape, "kvindex_duplicate_batches_total"), 1);       // seq 3, replayed then held
  EXPECT_EQ(Value(scrape, "kvindex_index_unresolved_parents_total"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_batches_total"), 3);
  EXPECT_EQ(Value(scrape, "kvindex_index_entries"), 0);
  EXPECT_EQ(Value(scrape, "kvindex_index_blocks"), 0);
}

// An engine that published more batches than its replay buffer still holds:
// the worker is followed from what is left, and says its history is
// incomplete in ListPods, GetStats and the metrics.
TEST_F(MetricsTest, AWorkerFirstSeenPastSeqZeroIsIncompleteEverywhere) {
  for (uint32_t seq = 0; seq < 100; ++seq) engine_->Publish(ChainBlockPayload(seq, kBlockSize, NowSeconds()));
  engine_->ForgetBefore(70);  // the buffer holds the last 30
  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.last_seq == 99 && w.state == WorkerState::kLive; }));
  absl::StatusOr<v1::ListPodsResponse> pods = client_->ListPods();
  ASSERT_TRUE(pods.ok()) << pods.status();
  ASSERT_EQ(pods->pods_size(), 1);
  ASSERT_EQ(pods->pods(0).workers_size(), 1);
  EXPECT_FALSE(pods->pods(0).workers(0).history_complete());
  absl::StatusOr<v1::GetStatsResponse> stats = client_->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->incomplete_workers(), 1u);
  EXPECT_EQ(stats->uncovered_gaps(), 0u);  // a warm start from a rolled buffer is not a gap
  EXPECT_EQ(Value(Scrape(server_->metrics_port()), "kvindex_incomplete_workers"), 1);
}

// A BlockStored whose parent the worker does not hold is counted, per event,
// and indexes nothing; a chain from the seed afterwards is indexed as usual.
TEST_F(MetricsTest, UnresolvedParentsAreCountedAndNotIndexed) {
  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.replays_ok == 1 && w.state == WorkerState::kLive; }));
  engine_->Publish(ChainBlockPayload(4, kBlockSize, NowSeconds()));  // parent: block 3, never stored
  const std::vector<uint32_t> tokens = PromptTokens(2, kBlockSize);
  engine_->Publish(PayloadBuilder()
                       .Stored({0xdead01}, 0xbeef00, std::vector<uint32_t>(tokens.begin(), tokens.begin() + kBlockSize),
                               kBlockSize)
                       .Stored({0xdead02, 0xdead03}, 0xbeef01, tokens, kBlockSize)
                       .Build(NowSeconds()));
  engine_->Publish(ChainBlockPayload(0, kBlockSize, NowSeconds()));
  engine_->Publish(ChainBlockPayload(1, kBlockSize, NowSeconds()));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.batches == 4; }));

  const PrometheusScrape scrape = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(scrape, "kvindex_index_unresolved_parents_total"), 3);
  EXPECT_EQ(Value(scrape, "kvindex_events_total{type=\"block_stored\"}"), 5);
  EXPECT_EQ(Value(scrape, "kvindex_index_entries"), 2);
  absl::StatusOr<v1::MatchResponse> match = client_->Match(CanonicalMatch());
  ASSERT_TRUE(match.ok()) << match.status();
  ASSERT_EQ(match->pods_size(), 1);
  EXPECT_EQ(match->pods(0).matched_blocks(), 2u);
}

// The index names up to seven tiers: GPU, CPU, four more in order of arrival,
// then "OTHER" for every further name (core/index/internal/medium_table.h). Eight blocks on
// eight tiers: the last two share "OTHER" in the gauge and in Match.
TEST_F(MetricsTest, TiersBeyondTheTableCountAsOther) {
  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.replays_ok == 1 && w.state == WorkerState::kLive; }));
  const std::vector<std::string> tiers = {"GPU", "CPU", "NVME", "DISK", "REMOTE", "LMCACHE", "S3", "TAPE"};
  for (uint32_t k = 0; k < tiers.size(); ++k) engine_->Publish(BlockOn(k, tiers[k]));
  ASSERT_TRUE(WaitForWorker([&](const WorkerStatus& w) { return w.batches == tiers.size(); }));

  const PrometheusScrape scrape = Scrape(server_->metrics_port());
  for (const char* tier : {"GPU", "CPU", "NVME", "DISK", "REMOTE", "LMCACHE"}) {
    EXPECT_EQ(Value(scrape, absl::StrCat("kvindex_index_medium_entries{medium=\"", tier, "\"}")), 1) << tier;
  }
  EXPECT_EQ(Value(scrape, "kvindex_index_medium_entries{medium=\"OTHER\"}"), 2);
  EXPECT_FALSE(scrape.Get("kvindex_index_medium_entries{medium=\"S3\"}").has_value());
  EXPECT_FALSE(scrape.Get("kvindex_index_medium_entries{medium=\"TAPE\"}").has_value());
  EXPECT_EQ(scrape.Sum("kvindex_index_medium_entries"), 8);

  v1::MatchRequest request;
  request.set_model(kModel);
  for (uint32_t t : PromptTokens(tiers.size(), kBlockSize)) request.add_token_ids(t);
  absl::StatusOr<v1::MatchResponse> match = client_->Match(request);
  ASSERT_TRUE(match.ok()) << match.status();
  ASSERT_EQ(match->pods_size(), 1);
  EXPECT_EQ(match->pods(0).matched_blocks(), tiers.size());
  EXPECT_THAT(match->pods(0).blocks_by_medium(),
              ::testing::UnorderedElementsAre(::testing::Pair("GPU", 1u), ::testing::Pair("CPU", 1u),
                                              ::testing::Pair("NVME", 1u), ::testing::Pair("DISK", 1u),
                                              ::testing::Pair("REMOTE", 1u), ::testing::Pair("LMCACHE", 1u),
                                              ::testing::Pair("OTHER", 2u)));
}

// A worker holds at most ManagerOptions::max_backlog live batches while it
// replays; the rest are dropped and counted. The engine never answers the
// first subscription's replay, so the worker stays replaying throughout.
// With a token on every RPC and a small message limit: a Match refused for
// either reason is counted like any other, in the metrics and in GetStats.
class MetricsRefusedMatchTest : public MetricsTest {
 protected:
  void Configure(server::ServerOptions& options) override {
    options.max_message_bytes = 64 << 10;
    options.auth = server::BearerAuth("secret", /*all_rpcs=*/true);
  }
};

TEST_F(MetricsRefusedMatchTest, EveryRefusedMatchIsCountedInMetricsAndStats) {
  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> with_token = client::KvIndexClient::Create(
      {.server = absl::StrCat("127.0.0.1:", server_->port()), .token = "secret", .max_message_bytes = 1 << 20});
  ASSERT_TRUE(with_token.ok()) << with_token.status();
  v1::MatchRequest oversized = CanonicalMatch();
  for (uint32_t t = 0; t < 40000; ++t) oversized.add_token_ids(t);  // > 64 KiB
  const absl::Status too_large = (*with_token)->Match(oversized).status();
  EXPECT_EQ(too_large.code(), absl::StatusCode::kResourceExhausted) << too_large;
  EXPECT_THAT(too_large.message(), HasSubstr("(--max_message_bytes)"));
  EXPECT_EQ(client_->Match(CanonicalMatch()).status().code(), absl::StatusCode::kUnauthenticated);
  ASSERT_TRUE((*with_token)->Match(CanonicalMatch()).ok());

  const PrometheusScrape scrape = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(scrape, "kvindex_match_requests_total{code=\"RESOURCE_EXHAUSTED\"}"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_match_requests_total{code=\"UNAUTHENTICATED\"}"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_match_requests_total{code=\"OK\"}"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_match_latency_seconds_count"), 3);
  absl::StatusOr<v1::GetStatsResponse> stats = (*with_token)->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->matches(), 1);
  EXPECT_EQ(stats->match_errors(), 2);

  // The other RPCs keep the limit too (checked by the service, not gRPC).
  v1::ListPodsRequest fat_list;
  fat_list.set_page_token(std::string(100 << 10, 'x'));
  EXPECT_EQ((*with_token)->ListPods(fat_list).status().code(), absl::StatusCode::kResourceExhausted);
}

class MetricsSmallBacklogTest : public MetricsTest {
 protected:
  void Configure(server::ServerOptions& options) override {
    options.manager.max_backlog = 2;
    options.manager.replay_timeout = absl::Hours(1);  // never within the test: no race with the drops
  }
};

TEST_F(MetricsSmallBacklogTest, LiveBatchesBeyondTheBacklogAreDroppedAndCounted) {
  engine_->SetReplayMuted(true);
  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE(WaitFor([&] { return engine_->replay_requests() == 1; }));
  for (uint32_t k = 0; k < 5; ++k) engine_->Publish(ChainBlockPayload(k, kBlockSize, NowSeconds()));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.dropped == 3; }));

  const PrometheusScrape scrape = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(scrape, "kvindex_dropped_batches_total"), 3);
  EXPECT_EQ(Value(scrape, "kvindex_workers{state=\"replaying\"}"), 1);
  EXPECT_EQ(Value(scrape, "kvindex_batches_total"), 0);
  EXPECT_EQ(Value(scrape, "kvindex_seq_gaps_total"), 0);
  EXPECT_EQ(Value(scrape, "kvindex_replays_total{result=\"ok\"}"), 0);
  EXPECT_EQ(Value(scrape, "kvindex_index_entries"), 0);
}

class MetricsSnapshotTest : public MetricsTest {
 protected:
  void Configure(server::ServerOptions& options) override {
    char tmpl[] = "/tmp/kvindex-metrics-snapshot-XXXXXX";
    dir_ = mkdtemp(tmpl);
    options.snapshot.dir = dir_;
    options.snapshot.interval = absl::Milliseconds(100);
  }
  void TearDown() override {
    server_.reset();  // its last snapshot goes into dir_
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(MetricsSnapshotTest, SnapshotFamiliesSayWhatWasLoadedAndWritten) {
  const PrometheusScrape start = Scrape(server_->metrics_port());
  EXPECT_EQ(Value(start, "kvindex_snapshot_loads_total{outcome=\"none\"}"), 1);  // an empty directory
  EXPECT_EQ(Value(start, "kvindex_snapshot_loads_total{outcome=\"corrupt\"}"), 0);
  EXPECT_EQ(Value(start, "kvindex_snapshot_writes_total{result=\"failed\"}"), 0);

  ASSERT_EQ(server_->pods().Upsert(EnginePod()).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.state == WorkerState::kLive; }));
  for (uint32_t k = 0; k < kBlocks; ++k) engine_->Publish(ChainBlockPayload(k, kBlockSize, NowSeconds()));
  ASSERT_TRUE(WaitForWorker([](const WorkerStatus& w) { return w.last_seq == kBlocks - 1; }));
  // A write that began after the last batch was applied holds every block.
  const double writes = Value(Scrape(server_->metrics_port()), "kvindex_snapshot_writes_total{result=\"ok\"}");
  PrometheusScrape after;
  ASSERT_TRUE(WaitFor([&] {
    after = Scrape(server_->metrics_port());
    return after.Get("kvindex_snapshot_writes_total{result=\"ok\"}").value_or(0) >= writes + 2;
  }));
  EXPECT_GT(Value(after, "kvindex_snapshot_bytes"), 0);
  EXPECT_GE(Value(after, "kvindex_snapshot_age_seconds"), 0);
  EXPECT_GE(Value(after, "kvindex_snapshot_pause_seconds"), 0);
  EXPECT_GE(Value(after, "kvindex_snapshot_write_seconds_count"), writes + 2);
  EXPECT_EQ(Value(after, "kvindex_snapshot_writes_total{result=\"failed\"}"), 0);
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(dir_) / "kvindex.snapshot"));
}

TEST_F(MetricsTest, HttpAnswersOnlyMetrics) {
  const HttpAnswer metrics = Get(server_->metrics_port(), "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(metrics.body, StartsWith("# HELP "));
  EXPECT_EQ(Get(server_->metrics_port(), "/").status, 404);
  EXPECT_EQ(Get(server_->metrics_port(), "/metricsx").status, 404);
}

TEST_F(MetricsTest, ShutdownStopsTheEndpoint) {
  const int port = server_->metrics_port();
  ASSERT_EQ(Get(port, "/metrics").status, 200);
  server_->Shutdown(absl::Now() + absl::Seconds(1));
  EXPECT_EQ(Get(port, "/metrics").status, -1);
}

// A --pods_file naming one pod per engine ("default/<name>", model kModel).
std::string PodsFile(const std::vector<std::pair<std::string, const FakeEngine*>>& engines) {
  std::string text;
  for (const auto& [name, engine] : engines) {
    absl::StrAppend(&text, "pods { namespace: \"default\" name: \"", name, "\" ip: \"", engine->host(),
                    "\" phase: \"Running\" labels { key: \"", kModelNameKey, "\" value: \"", kModel,
                    "\" } labels { key: \"", kKvEventsEnabledLabel, "\" value: \"true\" } events_port: ",
                    engine->events_port(), " replay_port: ", engine->replay_port(), " }\n");
  }
  return WriteTempFile("pods.textproto", text);
}

// Scrapes `port` until `pred` holds for a scrape (up to 20 s); the last scrape.
PrometheusScrape ScrapeUntil(int port, const std::function<bool(const PrometheusScrape&)>& pred) {
  PrometheusScrape scrape;
  WaitFor(
      [&] {
        const HttpAnswer answer = Get(port, "/metrics");
        absl::StatusOr<PrometheusScrape> parsed = ParsePrometheusText(answer.body);
        if (!parsed.ok()) return false;
        scrape = *std::move(parsed);
        return pred(scrape);
      },
      absl::Seconds(20));
  return scrape;
}

// ScrapeUntil `pred` holds, then one scrape more. A scrape collects the
// index's gauges before it renders the counters, so the scrape in which a
// counter first reaches a value may still show the gauges (and the index's
// counters) of just before; the next scrape is collected after it.
PrometheusScrape ScrapeSettled(int port, const std::function<bool(const PrometheusScrape&)>& pred) {
  (void)ScrapeUntil(port, pred);
  return ScrapeUntil(port, [](const PrometheusScrape&) { return true; });
}

// Publishes blocks [first, first + n) of the canonical prompt (block `first`
// chained to block first - 1, as in ChainBlockPayload) as one batch.
void PublishChain(FakeEngine& engine, uint32_t first, uint32_t n) {
  const std::vector<uint32_t> all = PromptTokens(first + n, kBlockSize);
  std::vector<uint64_t> hashes;
  for (uint32_t k = first; k < first + n; ++k) hashes.push_back(kChainHashBase + k);
  std::optional<uint64_t> parent;
  if (first > 0) parent = kChainHashBase + first - 1;
  engine.Publish(PayloadBuilder()
                     .Stored(hashes, parent, std::vector<uint32_t>(all.begin() + first * kBlockSize, all.end()),
                             kBlockSize)
                     .Build(NowSeconds()));
}

// Publishes block k of the canonical prompt with no parent (hashed from the
// seed): which blocks a cap evicts never leaves a later block unresolved.
void PublishRootBlock(FakeEngine& engine, uint32_t k) {
  const std::vector<uint32_t> all = PromptTokens(k + 1, kBlockSize);
  engine.Publish(PayloadBuilder()
                     .Stored({kChainHashBase + k}, std::nullopt,
                             std::vector<uint32_t>(all.begin() + k * kBlockSize, all.end()), kBlockSize)
                     .Build(NowSeconds()));
}

// The caps as kvindex-server flags: --max_blocks_per_worker evicts from the
// worker over it; --max_index_entries evicts from the worker holding the most
// entries; both counted in kvindex_index_evictions_total.
TEST(MetricsProcessTest, IndexCapFlagsEvictAndCount) {
  absl::StatusOr<std::unique_ptr<FakeEngine>> a = FakeEngine::Create({});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<std::unique_ptr<FakeEngine>> b = FakeEngine::Create({});
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<ServerProcess> server =
      StartServerProcess({"--metrics_listen=127.0.0.1:0", "--max_blocks_per_worker=4", "--max_index_entries=6",
                          "--pods_file=" + PodsFile({{"a", a->get()}, {"b", b->get()}})});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = MetricsPortOf(*server);
  ASSERT_GT(port, 0);
  ASSERT_TRUE((*a)->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_TRUE((*b)->WaitForSubscribers(1, absl::Seconds(20)));
  PrometheusScrape scrape = ScrapeUntil(port, [](const PrometheusScrape& s) {
    return s.Get("kvindex_replays_total{result=\"ok\"}") == 2;  // both first-subscribe replays are over
  });
  ASSERT_EQ(Value(scrape, "kvindex_replays_total{result=\"ok\"}"), 2);

  // a stores 6 blocks, one batch each: it keeps 4, 2 are evicted by the per-worker cap.
  // (Unchained: the cap may evict the block just stored, which would leave the
  // next block of a chain unresolved.)
  for (uint32_t k = 0; k < 6; ++k) PublishRootBlock(**a, k);
  scrape = ScrapeSettled(port, [](const PrometheusScrape& s) { return s.Get("kvindex_batches_total") == 6; });
  EXPECT_EQ(Value(scrape, "kvindex_index_evictions_total"), 2);
  EXPECT_EQ(Value(scrape, "kvindex_index_entries"), 4);

  // b stores 3 blocks: 7 entries exceed the global cap of 6; a, holding the most, loses one.
  PublishChain(**b, 0, 3);
  scrape = ScrapeSettled(port, [](const PrometheusScrape& s) { return s.Get("kvindex_batches_total") == 7; });
  EXPECT_EQ(Value(scrape, "kvindex_index_evictions_total"), 3);
  EXPECT_EQ(Value(scrape, "kvindex_index_entries"), 6);
  EXPECT_EQ(Value(scrape, "kvindex_events_total{type=\"block_stored\"}"), 7);
  EXPECT_EQ(Value(scrape, "kvindex_index_unresolved_parents_total"), 0);
}

// --index_memory_mb lowers both caps to what the budget holds (1 MiB: 327
// speculative entries set aside at 400 B, the rest / 128 B = 7170 entries): one
// batch of 11000 blocks leaves 7170 and counts 3830 evictions.
TEST(MetricsProcessTest, IndexMemoryBudgetFlagCapsEntries) {
  absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create({});
  ASSERT_TRUE(engine.ok()) << engine.status();
  absl::StatusOr<ServerProcess> server = StartServerProcess(
      {"--metrics_listen=127.0.0.1:0", "--index_memory_mb=1", "--pods_file=" + PodsFile({{"a", engine->get()}})});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = MetricsPortOf(*server);
  ASSERT_GT(port, 0);
  ASSERT_TRUE((*engine)->WaitForSubscribers(1, absl::Seconds(20)));
  ASSERT_EQ(Value(ScrapeUntil(port,
                              [](const PrometheusScrape& s) {
                                return s.Get("kvindex_replays_total{result=\"ok\"}") == 1;
                              }),
                  "kvindex_replays_total{result=\"ok\"}"),
            1);
  constexpr uint32_t kStored = 11000;
  constexpr uint64_t kCap = ((1 << 20) - 327 * 400) / 128;
  ASSERT_EQ(WithMemoryBudget(IndexOptions{}, 1 << 20).max_entries, kCap);
  PublishChain(**engine, 0, kStored);
  const PrometheusScrape scrape =
      ScrapeSettled(port, [](const PrometheusScrape& s) { return s.Get("kvindex_batches_total") == 1; });
  EXPECT_EQ(Value(scrape, "kvindex_index_entries"), kCap);
  EXPECT_EQ(Value(scrape, "kvindex_index_evictions_total"), kStored - kCap);
  EXPECT_EQ(Value(scrape, "kvindex_events_total{type=\"block_stored\"}"), 1);
}

// The process: --metrics_listen picks a port and logs it; a taken port is a start failure.
TEST(MetricsProcessTest, MetricsListenFlag) {
  absl::StatusOr<ServerProcess> server = StartServerProcess({"--metrics_listen=127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = MetricsPortOf(*server);
  ASSERT_GT(port, 0);
  const PrometheusScrape scrape = Scrape(port);
  EXPECT_TRUE(scrape.types.contains("kvindex_events_total"));
  EXPECT_EQ(scrape.types.at("kvindex_match_latency_seconds"), "histogram");

  const CommandResult taken = RunCommand(
      {BinPath("kvindex-server"), "--listen=127.0.0.1:0", absl::StrCat("--metrics_listen=127.0.0.1:", port)},
      absl::Seconds(30));
  EXPECT_EQ(taken.exit_code, 1) << taken.err;
  EXPECT_THAT(taken.err, HasSubstr("cannot serve metrics on 127.0.0.1:"));

  absl::StatusOr<ServerProcess> disabled = StartServerProcess({});  // --metrics_listen= (empty)
  ASSERT_TRUE(disabled.ok()) << disabled.status();
  EXPECT_TRUE(WaitFor([&] { return disabled->process->Stderr().find("metrics endpoint disabled") != std::string::npos; }));
}

}  // namespace
}  // namespace kvindex::testing
