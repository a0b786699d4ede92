// GET /metrics of a real server: an in-process KvIndexServer fed by a fake
// vLLM engine over ZeroMQ and called over gRPC, scraped over HTTP on
// 127.0.0.1 before and after traffic; and the kvindex-server process's
// --metrics_listen. Every scrape must parse as Prometheus text.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/kvindex_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "server/kvindex_server.h"
#include "tests/core/fake_engine.h"
#include "tests/core/prometheus_text.h"
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
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create({});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
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

// The process: --metrics_listen picks a port and logs it; a taken port is a start failure.
TEST(MetricsProcessTest, MetricsListenFlag) {
  absl::StatusOr<ServerProcess> server = StartServerProcess({"--metrics_listen=127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.status();
  int port = 0;
  ASSERT_TRUE(WaitFor([&] {
    const std::string log = server->process->Stderr();
    constexpr std::string_view kMarker = "metrics on http://127.0.0.1:";
    const size_t at = log.find(kMarker);
    if (at == std::string::npos) return false;
    const size_t start = at + kMarker.size();
    return absl::SimpleAtoi(log.substr(start, log.find('/', start) - start), &port);
  }));
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
