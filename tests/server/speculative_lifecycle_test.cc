// Routing hints end to end (README "Routing hints"): a real kvindex-server
// process following a fake vLLM engine over ZeroMQ (tests/core/ingest/fake_engine.h
// speaks vLLM's protocol), called over gRPC and scraped over HTTP.
//  - A prompt RecordRouting sends to the engine's pod is matched as the tier
//    SPECULATIVE; once the engine's own BlockStored of that prompt is applied,
//    the same blocks are matched on GPU and no longer as SPECULATIVE, and
//    kvindex_speculative_total{outcome="confirmed"} counts each of them.
//  - A hint the engine never confirms expires at its ttl_ms: Match stops
//    naming it, kvindex_speculative_total{outcome="expired"} counts it, and it
//    never comes back as speculative, even when the engine stores the prompt later.
// Nothing here asserts how long anything took: every wait has a deadline.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kvindex_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/core/ingest/fake_engine.h"
#include "tests/server/prometheus_text.h"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"
#include "tests/testing/clients.h"

namespace kvindex::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

constexpr char kModel[] = "llama-3-8b";
constexpr char kPod[] = "default/vllm-0";
constexpr uint32_t kBlockSize = 16;  // the engine's, and --default_block_size
constexpr uint32_t kBlocks = 5;

class SpeculativeLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create({});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    const std::string pods = WriteTempFile(
        "speculative-pods.textproto",
        absl::StrCat(R"(pods { namespace: "default" name: "vllm-0" ip: "127.0.0.1" phase: "Running"
                       labels { key: "model.aibrix.ai/name" value: ")", kModel, R"(" }
                       labels { key: "model.aibrix.ai/kv-events-enabled" value: "true" }
                       events_port: )", engine_->events_port(), " replay_port: ", engine_->replay_port(), " }"));
    absl::StatusOr<ServerProcess> server = StartServerProcess({"--metrics_listen=127.0.0.1:0", "--pods_file=" + pods});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = testutil::Connect(server_.address, absl::Seconds(20));
    ASSERT_NE(client_, nullptr);
    metrics_port_ = MetricsPortOf(server_);
    ASSERT_GT(metrics_port_, 0) << server_.process->Stderr();
    ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));
    // The first-subscribe replay is over: what the engine publishes from now on is applied live.
    ASSERT_TRUE(WaitFor([&] { return Scrape().Get("kvindex_replays_total{result=\"ok\"}") == 1; }, absl::Seconds(30),
                        absl::Milliseconds(50)));
  }

  // GET /metrics, parsed; an empty scrape (and a test failure) when it does not parse.
  PrometheusScrape Scrape() const {
    httplib::Client http("127.0.0.1", metrics_port_);
    http.set_connection_timeout(5, 0);
    http.set_read_timeout(10, 0);
    httplib::Result result = http.Get("/metrics");
    if (!result || result->status != 200) return {};
    absl::StatusOr<PrometheusScrape> parsed = ParsePrometheusText(result->body);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    return parsed.ok() ? *std::move(parsed) : PrometheusScrape{};
  }

  // Scrapes until `done` holds (up to 30 s); the last scrape.
  PrometheusScrape ScrapeUntil(const std::function<bool(const PrometheusScrape&)>& done) const {
    PrometheusScrape scrape;
    EXPECT_TRUE(WaitFor(
        [&] {
          scrape = Scrape();
          return done(scrape);
        },
        absl::Seconds(30), absl::Milliseconds(50)));
    return scrape;
  }

  // RecordRouting of `tokens` to the engine's pod with `ttl_ms`.
  v1::RecordRoutingResponse Route(const std::vector<uint32_t>& tokens, uint32_t ttl_ms) {
    v1::RecordRoutingRequest request;
    request.set_model(kModel);
    request.set_pod(kPod);
    request.set_ttl_ms(ttl_ms);
    request.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    absl::StatusOr<v1::RecordRoutingResponse> response = client_->RecordRouting(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : v1::RecordRoutingResponse{};
  }

  // Match of `tokens`; the engine pod's entry, nullopt when the answer names no pod.
  std::optional<v1::PodMatch> MatchPod(const std::vector<uint32_t>& tokens, double speculative_weight = 1) {
    v1::MatchRequest request;
    request.set_model(kModel);
    request.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    if (speculative_weight != 1) (*request.mutable_medium_weights())["SPECULATIVE"] = speculative_weight;
    absl::StatusOr<v1::MatchResponse> response = client_->Match(request);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok() || response->pods_size() == 0) return std::nullopt;
    EXPECT_EQ(response->pods_size(), 1) << response->DebugString();
    EXPECT_EQ(response->pods(0).pod(), kPod);
    return response->pods(0);
  }

  std::unique_ptr<FakeEngine> engine_;
  ServerProcess server_;
  std::unique_ptr<client::KvIndexClient> client_;
  int metrics_port_ = 0;
};

TEST_F(SpeculativeLifecycleTest, RoutedPromptIsSpeculativeUntilTheEngineStoresIt) {
  const std::vector<uint32_t> prompt = PromptTokens(kBlocks, kBlockSize);
  // An explicit TTL far beyond any wait below: only the engine's confirmation ends these entries.
  const v1::RecordRoutingResponse routed = Route(prompt, /*ttl_ms=*/600000);
  EXPECT_EQ(routed.blocks(), kBlocks);
  EXPECT_EQ(routed.ttl_ms(), 600000u);

  std::optional<v1::PodMatch> match = MatchPod(prompt);
  ASSERT_TRUE(match.has_value());
  EXPECT_EQ(match->matched_blocks(), kBlocks);
  EXPECT_EQ(match->matched_tokens(), kBlocks * kBlockSize);
  EXPECT_THAT(match->blocks_by_medium(), ElementsAre(Pair("SPECULATIVE", kBlocks)));
  EXPECT_FALSE(MatchPod(prompt, /*speculative_weight=*/0).has_value()) << "nothing is confirmed yet";
  PrometheusScrape scrape = Scrape();
  EXPECT_EQ(scrape.Get("kvindex_speculative_entries"), kBlocks);
  EXPECT_EQ(scrape.Get("kvindex_speculative_total{outcome=\"confirmed\"}"), 0);

  // The engine stores the first three blocks: those are on GPU, the other two still speculative.
  for (uint32_t k = 0; k < 3; ++k) engine_->Publish(ChainBlockPayload(k, kBlockSize));
  ASSERT_TRUE(WaitFor(
      [&] {
        match = MatchPod(prompt);
        return match.has_value() && match->blocks_by_medium().count("GPU") && match->blocks_by_medium().at("GPU") == 3;
      },
      absl::Seconds(30), absl::Milliseconds(20)))
      << (match ? match->DebugString() : "no pod");
  EXPECT_EQ(match->matched_blocks(), kBlocks);
  EXPECT_THAT(match->blocks_by_medium(), UnorderedElementsAre(Pair("GPU", 3u), Pair("SPECULATIVE", 2u)));

  // Then the rest: every block on GPU, none speculative.
  for (uint32_t k = 3; k < kBlocks; ++k) engine_->Publish(ChainBlockPayload(k, kBlockSize));
  ASSERT_TRUE(WaitFor(
      [&] {
        match = MatchPod(prompt);
        return match.has_value() && match->blocks_by_medium().count("GPU") &&
               match->blocks_by_medium().at("GPU") == kBlocks;
      },
      absl::Seconds(30), absl::Milliseconds(20)))
      << (match ? match->DebugString() : "no pod");
  EXPECT_EQ(match->matched_blocks(), kBlocks);
  EXPECT_THAT(match->blocks_by_medium(), ElementsAre(Pair("GPU", kBlocks)));
  // Confirmed blocks are not speculative: weighing SPECULATIVE 0 changes nothing.
  const std::optional<v1::PodMatch> confirmed_only = MatchPod(prompt, /*speculative_weight=*/0);
  ASSERT_TRUE(confirmed_only.has_value());
  EXPECT_EQ(confirmed_only->matched_blocks(), kBlocks);

  // The metrics count each block confirmed once, its latency observed; no entry is left.
  scrape = ScrapeUntil([](const PrometheusScrape& s) {
    return s.Get("kvindex_speculative_total{outcome=\"confirmed\"}") == kBlocks;
  });
  EXPECT_EQ(scrape.Get("kvindex_speculative_total{outcome=\"confirmed\"}"), kBlocks);
  EXPECT_EQ(scrape.Get("kvindex_speculative_total{outcome=\"expired\"}"), 0);
  EXPECT_EQ(scrape.Get("kvindex_speculative_total{outcome=\"dropped\"}"), 0);
  EXPECT_EQ(scrape.Get("kvindex_speculative_entries"), 0);
  EXPECT_EQ(scrape.Get("kvindex_speculative_confirm_seconds_count"), kBlocks);
  EXPECT_EQ(scrape.Get("kvindex_events_total{type=\"block_stored\"}"), kBlocks);
}

TEST_F(SpeculativeLifecycleTest, UnconfirmedHintExpiresAndIsNeverNamedAgain) {
  constexpr uint32_t kTtlMs = 1000;
  const std::vector<uint32_t> prompt = PromptTokens(2, kBlockSize);
  const absl::Time before = absl::Now();
  const v1::RecordRoutingResponse routed = Route(prompt, kTtlMs);
  EXPECT_EQ(routed.blocks(), 2u);
  EXPECT_EQ(routed.ttl_ms(), kTtlMs);
  // A Match answered before the deadline names it (the server received the
  // hint after `before`, so its deadline is after before + ttl).
  std::optional<v1::PodMatch> match = MatchPod(prompt);
  if (absl::Now() < before + absl::Milliseconds(kTtlMs)) {
    ASSERT_TRUE(match.has_value());
    EXPECT_THAT(match->blocks_by_medium(), ElementsAre(Pair("SPECULATIVE", 2u)));
  }

  // The engine never stores it: once the deadline passed, Match names no pod.
  ASSERT_TRUE(WaitFor([&] { return !MatchPod(prompt).has_value(); }, absl::Seconds(30), absl::Milliseconds(50)));
  PrometheusScrape scrape =
      ScrapeUntil([](const PrometheusScrape& s) { return s.Get("kvindex_speculative_total{outcome=\"expired\"}") == 2; });
  EXPECT_EQ(scrape.Get("kvindex_speculative_total{outcome=\"expired\"}"), 2);
  EXPECT_EQ(scrape.Get("kvindex_speculative_total{outcome=\"confirmed\"}"), 0);
  EXPECT_EQ(scrape.Get("kvindex_speculative_entries"), 0);

  // Never again: not after another hint (which purges), nor after unrelated engine events.
  std::vector<uint32_t> other = prompt;
  other[0] = 999999;
  EXPECT_EQ(Route(other, /*ttl_ms=*/600000).blocks(), 2u);
  PayloadBuilder unrelated;
  unrelated.Stored({0x5150}, std::nullopt, std::vector<uint32_t>(kBlockSize, 7), kBlockSize);
  engine_->Publish(unrelated.Build());
  ScrapeUntil([](const PrometheusScrape& s) { return s.Get("kvindex_events_total{type=\"block_stored\"}") == 1; });
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(MatchPod(prompt).has_value()) << "Match " << i;

  // The engine storing the prompt late puts it on GPU, never back on SPECULATIVE, and confirms nothing.
  for (uint32_t k = 0; k < 2; ++k) engine_->Publish(ChainBlockPayload(k, kBlockSize));
  ASSERT_TRUE(WaitFor(
      [&] {
        match = MatchPod(prompt);
        return match.has_value() && match->matched_blocks() == 2 && match->blocks_by_medium().count("GPU") &&
               match->blocks_by_medium().at("GPU") == 2;
      },
      absl::Seconds(30), absl::Milliseconds(20)))
      << (match ? match->DebugString() : "no pod");
  EXPECT_THAT(match->blocks_by_medium(), ElementsAre(Pair("GPU", 2u)));
  scrape = Scrape();
  EXPECT_EQ(scrape.Get("kvindex_speculative_total{outcome=\"expired\"}"), 2);
  EXPECT_EQ(scrape.Get("kvindex_speculative_total{outcome=\"confirmed\"}"), 0);
  EXPECT_EQ(scrape.Get("kvindex_speculative_confirm_seconds_count"), 0);
  EXPECT_EQ(scrape.Get("kvindex_speculative_entries"), 2) << "the other prompt's";
}

}  // namespace
}  // namespace kvindex::testing
