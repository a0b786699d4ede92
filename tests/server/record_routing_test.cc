// kvindex.v1.KvIndex.RecordRouting against an in-process KvIndexServer: its
// refusals (as Match's, NOT_FOUND for an unknown pod or rank), the TTL it
// applies (adaptive for a subscribed pod, none for a pod without KV events),
// what Match, ListPods and /metrics then show, and the token under
// --auth_all_rpcs.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/kvindex_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/kvindex_server.h"
#include "tests/testing/clients.h"
#include "tests/testing/pods.h"

namespace kvindex::server {
namespace {

using ::kvindex::testutil::Upsert;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

std::vector<uint32_t> Tokens(uint32_t n) {
  std::vector<uint32_t> tokens(n);
  for (uint32_t i = 0; i < n; ++i) tokens[i] = i;
  return tokens;
}

class RecordRoutingTest : public ::testing::Test {
 protected:
  void StartServer(ServerOptions options = {}) {
    options.listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<KvIndexServer>> server = KvIndexServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    client_ = Client("");
  }

  std::unique_ptr<client::KvIndexClient> Client(const std::string& token) {
    return testutil::Connect(address_, {.token = token, .timeout = absl::Seconds(20)});
  }

  // A subscribed pod (its engine never answers: nothing listens on port 1) and
  // one recorded but not subscribed (KV events disabled), both serving "m";
  // the first has two dp ranks.
  void AddPods() {
    v1::Pod followed = testutil::EnginePod("default", "followed", "m", 1);
    followed.set_dp_size(2);
    v1::Pod silent = testutil::EnginePod("default", "silent", "m", 1);
    silent.set_kv_events_enabled(false);
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client_->SyncPods({Upsert(followed), Upsert(silent)});
    ASSERT_TRUE(acks.ok()) << acks.status();
  }

  static v1::RecordRoutingRequest Hint(const std::string& pod, uint32_t tokens, uint32_t rank = 0) {
    v1::RecordRoutingRequest request;
    request.set_model("m");
    request.set_pod(pod);
    request.set_dp_rank(rank);
    const std::vector<uint32_t> t = Tokens(tokens);
    request.mutable_token_ids()->Add(t.begin(), t.end());
    return request;
  }

  v1::MatchResponse Match(uint32_t tokens, double speculative_weight = 1) {
    v1::MatchRequest request;
    request.set_model("m");
    const std::vector<uint32_t> t = Tokens(tokens);
    request.mutable_token_ids()->Add(t.begin(), t.end());
    if (speculative_weight != 1) (*request.mutable_medium_weights())["SPECULATIVE"] = speculative_weight;
    absl::StatusOr<v1::MatchResponse> response = client_->Match(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : v1::MatchResponse{};
  }

  std::unique_ptr<KvIndexServer> server_;
  std::string address_;
  std::unique_ptr<client::KvIndexClient> client_;
};

TEST_F(RecordRoutingTest, RefusesBadRequestsAsMatchDoesAndUnknownPodsOrRanksWithNotFound) {
  ServerOptions options;
  options.service.max_match_tokens = 64;
  StartServer(std::move(options));
  AddPods();
  auto refused = [this](const v1::RecordRoutingRequest& request) {
    return client_->RecordRouting(request).status();
  };
  v1::RecordRoutingRequest r = Hint("default/followed", 32);
  r.clear_model();
  EXPECT_EQ(refused(r), absl::InvalidArgumentError("model is required"));
  r = Hint("default/followed", 32);
  r.clear_token_ids();
  EXPECT_EQ(refused(r), absl::InvalidArgumentError("exactly one of token_ids and block_hashes must be given"));
  r = Hint("default/followed", 32);
  r.add_block_hashes(1);
  EXPECT_EQ(refused(r), absl::InvalidArgumentError("exactly one of token_ids and block_hashes must be given"));
  EXPECT_EQ(refused(Hint("default/followed", 65)),
            absl::InvalidArgumentError("RecordRouting carries 65 token_ids; the limit is 64 (--max_match_tokens)"));
  r = Hint("default/followed", 0);
  r.add_block_hashes(1);
  r.set_cache_salt("salt");
  EXPECT_EQ(refused(r),
            absl::InvalidArgumentError("cache_salt and mm_inputs go with token_ids (block_hashes already include them)"));
  EXPECT_EQ(refused(Hint("default/nobody", 32)), absl::NotFoundError("no pod \"default/nobody\" is known"));
  EXPECT_EQ(refused(Hint("default/followed", 32, /*rank=*/2)),
            absl::NotFoundError("pod \"default/followed\" has no dp rank 2 (dp_size 2)"));
  EXPECT_EQ(refused(Hint("default/silent", 32, /*rank=*/1)),
            absl::NotFoundError("pod \"default/silent\" has no dp rank 1 (dp_size 1)"));
  r = Hint("default/followed", 32);
  r.set_model("\xff\xfe");  // a request that does not parse
  const absl::Status unparsed = refused(r);
  EXPECT_EQ(unparsed.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unparsed.message(), ::testing::HasSubstr("does not parse"));
  // Nothing was recorded by the refused calls.
  EXPECT_EQ(Match(64).pods_size(), 0);
}

TEST_F(RecordRoutingTest, ModelNotServedByThisReplicaIsFailedPrecondition) {
  ServerOptions options;
  absl::StatusOr<ModelFilter> models = ModelFilter::Create("other");
  ASSERT_TRUE(models.ok());
  options.service.models = *models;
  StartServer(std::move(options));
  EXPECT_EQ(client_->RecordRouting(Hint("default/followed", 32)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(RecordRoutingTest, HintsMatchAsSpeculativeAndShowInListPodsAndMetrics) {
  StartServer();
  AddPods();
  absl::StatusOr<v1::RecordRoutingResponse> followed = client_->RecordRouting(Hint("default/followed", 40, 1));
  ASSERT_TRUE(followed.ok()) << followed.status();
  EXPECT_EQ(followed->blocks(), 2u);     // 16-token blocks (--default_block_size) before any event
  EXPECT_EQ(followed->ttl_ms(), 2000u);  // --speculative_ttl until the engine has confirmed enough
  absl::StatusOr<v1::RecordRoutingResponse> silent = client_->RecordRouting(Hint("default/silent", 64));
  ASSERT_TRUE(silent.ok()) << silent.status();
  EXPECT_EQ(silent->blocks(), 4u);
  EXPECT_EQ(silent->ttl_ms(), 0u);  // no KV events: kept until evicted
  absl::StatusOr<v1::RecordRoutingResponse> explicit_ttl = [&] {
    v1::RecordRoutingRequest r = Hint("default/followed", 16);
    r.set_ttl_ms(60000);
    return client_->RecordRouting(r);
  }();
  ASSERT_TRUE(explicit_ttl.ok());
  EXPECT_EQ(explicit_ttl->ttl_ms(), 60000u);

  const v1::MatchResponse match = Match(64);
  EXPECT_EQ(match.block_size(), 16u);
  ASSERT_EQ(match.pods_size(), 3);
  EXPECT_EQ(match.pods(0).pod(), "default/silent");
  EXPECT_EQ(match.pods(0).matched_blocks(), 4u);
  EXPECT_THAT(match.pods(0).blocks_by_medium(), ElementsAre(Pair("SPECULATIVE", 4u)));
  EXPECT_EQ(match.pods(1).pod(), "default/followed");
  EXPECT_EQ(match.pods(1).dp_rank(), 1u);
  EXPECT_EQ(match.pods(1).matched_blocks(), 2u);
  EXPECT_EQ(match.pods(2).dp_rank(), 0u);
  EXPECT_EQ(match.pods(2).matched_blocks(), 1u);
  // A gateway that wants confirmed blocks only.
  EXPECT_EQ(Match(64, /*speculative_weight=*/0).pods_size(), 0);

  absl::StatusOr<v1::ListPodsResponse> pods = client_->ListPods();
  ASSERT_TRUE(pods.ok());
  ASSERT_EQ(pods->pods_size(), 2);
  for (const v1::PodInfo& pod : pods->pods()) {
    if (pod.key() == "default/followed") {
      ASSERT_EQ(pod.workers_size(), 2);
      EXPECT_EQ(pod.workers(0).speculative_entries(), 1u);
      EXPECT_EQ(pod.workers(1).speculative_entries(), 2u);
      EXPECT_EQ(pod.workers(1).speculative_ttl_ms(), 2000u);
    } else {
      // Not subscribed: its one worker exists through the hints alone.
      EXPECT_EQ(pod.key(), "default/silent");
      EXPECT_FALSE(pod.subscribed());
      ASSERT_EQ(pod.workers_size(), 1);
      EXPECT_EQ(pod.workers(0).dp_rank(), 0u);
      EXPECT_EQ(pod.workers(0).state(), "hints_only");
      EXPECT_EQ(pod.workers(0).speculative_entries(), 4u);
      EXPECT_EQ(pod.workers(0).speculative_ttl_ms(), 0u);  // kept until evicted
      EXPECT_EQ(pod.workers(0).blocks(), 0u);
    }
  }
  const std::string metrics = server_->metrics().Render();
  EXPECT_THAT(metrics, HasSubstr("kvindex_speculative_entries 7\n"));
  EXPECT_THAT(metrics, HasSubstr("kvindex_speculative_total{outcome=\"confirmed\"} 0\n"));
  EXPECT_THAT(metrics, HasSubstr("kvindex_speculative_confirm_seconds_count 0\n"));

  // Deleting a pod drops its workers' entries, KV events or not.
  ASSERT_TRUE(client_->SyncPods({testutil::Delete("default/followed")}).ok());
  EXPECT_EQ(Match(64).pods_size(), 1);
  ASSERT_TRUE(client_->SyncPods({testutil::Delete("default/silent")}).ok());
  EXPECT_EQ(Match(64).pods_size(), 0);
}

TEST_F(RecordRoutingTest, NeedsTheTokenUnderAuthAllRpcs) {
  ServerOptions options;
  options.auth = BearerAuth("s3cr3t-token", /*all_rpcs=*/true);
  StartServer(std::move(options));
  std::unique_ptr<client::KvIndexClient> authed = Client("s3cr3t-token");
  ASSERT_TRUE(authed->SyncPods({Upsert(testutil::EnginePod("default", "followed", "m", 1))}).ok());
  EXPECT_EQ(client_->RecordRouting(Hint("default/followed", 32)).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(authed->RecordRouting(Hint("default/followed", 32)).ok());
}

}  // namespace
}  // namespace kvindex::server
