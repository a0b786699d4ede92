// In-process tests of every kvindex.v1.KvIndex RPC and every error code: a
// real KvIndexServer on 127.0.0.1:0, called over gRPC.

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/kvindex_client.h"
#include "core/index/block_hash.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/kvindex_server.h"
#include "server/proto_convert.h"
#include "tests/testing/clients.h"
#include "tests/testing/pods.h"
#include "tests/testing/wait.h"

namespace kvindex::server {
namespace {

using ::kvindex::testutil::Upsert;
using ::kvindex::testutil::WaitFor;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

constexpr uint32_t kBlockSize = 16;

std::vector<uint32_t> Tokens(uint32_t n, uint32_t first = 0) {
  std::vector<uint32_t> tokens(n);
  for (uint32_t i = 0; i < n; ++i) tokens[i] = first + i;
  return tokens;
}

// A batch storing the first `blocks` blocks of Tokens(...) on `medium`.
EventBatch StoredBatch(uint32_t blocks, const std::string& medium = "GPU") {
  BlockStored stored;
  for (uint32_t i = 0; i < blocks; ++i) stored.block_hashes.push_back(1000 + i);
  stored.token_ids = Tokens(blocks * kBlockSize);
  stored.block_size = kBlockSize;
  stored.medium = medium;
  EventBatch batch;
  batch.ts = 1700000000;
  batch.events.push_back(stored);
  return batch;
}

// A pod that is valid and subscribable; its engine never answers (nothing
// listens on port 1: the subscription just keeps connecting), which SyncPods
// does not wait for.
v1::Pod GoodPod(const std::string& name) {
  return testutil::EnginePod("default", name, "m", 1, testutil::KvEventsSwitch::kLabel);
}

class KvIndexServiceTest : public ::testing::Test {
 protected:
  void StartServer(ServerOptions options = {}) {
    options.listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<KvIndexServer>> server = KvIndexServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    client_ = Client("");
    stub_ = v1::KvIndex::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  std::unique_ptr<client::KvIndexClient> Client(const std::string& token) {
    return testutil::Connect(address_, {.token = token, .timeout = absl::Seconds(20)});
  }

  absl::StatusOr<v1::MatchResponse> Match(v1::MatchRequest request) { return client_->Match(request); }

  v1::MatchRequest TokensRequest(uint32_t n) {
    v1::MatchRequest request;
    request.set_model("m");
    const std::vector<uint32_t> tokens = Tokens(n);
    request.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    return request;
  }

  // One stream carrying `updates`; the acks.
  std::vector<v1::PodUpdateAck> Sync(const std::vector<v1::PodUpdate>& updates) {
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client_->SyncPods(updates);
    EXPECT_TRUE(acks.ok()) << acks.status();
    return acks.ok() ? *acks : std::vector<v1::PodUpdateAck>{};
  }

  std::unique_ptr<KvIndexServer> server_;
  std::string address_;
  std::unique_ptr<client::KvIndexClient> client_;
  std::unique_ptr<v1::KvIndex::Stub> stub_;
};

// ---------------------------------------------------------------- Match

// Sharded by model (--models): the replica answers only for its models, and a
// misrouted gateway is told so rather than answered "nobody holds it".
TEST_F(KvIndexServiceTest, AReplicaShardedByModelRefusesOtherModelsNamingTheFlag) {
  absl::StatusOr<ModelFilter> models = ModelFilter::Create("m|llama-.*");
  ASSERT_TRUE(models.ok());
  ServerOptions options;
  options.service.models = *models;
  options.manager.models = *models;
  StartServer(options);
  (void)server_->index().Apply({"default/a", 0}, {"m", ""}, StoredBatch(2));
  absl::StatusOr<v1::MatchResponse> served = Match(TokensRequest(32));
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(served->pods_size(), 1);
  v1::MatchRequest other = TokensRequest(32);
  other.set_model("qwen");
  absl::StatusOr<v1::MatchResponse> refused = Match(other);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--models=m|llama-.*"));
  // Its pods are ignored, saying why.
  v1::PodUpdate update;
  v1::Pod* pod = update.mutable_upsert();
  pod->set_namespace_("default");
  pod->set_name("q");
  pod->set_ip("127.0.0.1");
  pod->set_phase("Running");
  pod->set_model("qwen");
  pod->set_kv_events_enabled(true);
  const std::vector<v1::PodUpdateAck> acks = Sync({update});
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].outcome(), v1::POD_OUTCOME_IGNORED);
  EXPECT_THAT(acks[0].reason(), HasSubstr("model \"qwen\" is not served by this replica (--models=m|llama-.*)"));
}

TEST_F(KvIndexServiceTest, MatchNamesPodsHoldingThePrefixBestFirst) {
  StartServer();
  (void)server_->index().Apply({"default/long", 0}, {"m", ""}, StoredBatch(4));
  (void)server_->index().Apply({"default/short", 1}, {"m", ""}, StoredBatch(2, "CPU"));

  absl::StatusOr<v1::MatchResponse> response = Match(TokensRequest(4 * kBlockSize + 5));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->block_size(), kBlockSize);
  EXPECT_EQ(response->query_blocks(), 4u);
  ASSERT_EQ(response->pods_size(), 2);
  const v1::PodMatch& best = response->pods(0);
  EXPECT_EQ(best.pod(), "default/long");
  EXPECT_EQ(best.dp_rank(), 0u);
  EXPECT_EQ(best.matched_blocks(), 4u);
  EXPECT_EQ(best.matched_tokens(), 4 * kBlockSize);
  EXPECT_THAT(best.blocks_by_medium(), UnorderedElementsAre(Pair("GPU", 4u)));
  EXPECT_DOUBLE_EQ(best.score(), 4);
  EXPECT_EQ(response->pods(1).pod(), "default/short");
  EXPECT_EQ(response->pods(1).dp_rank(), 1u);
  EXPECT_EQ(response->pods(1).matched_tokens(), 2 * kBlockSize);
  EXPECT_THAT(response->pods(1).blocks_by_medium(), UnorderedElementsAre(Pair("CPU", 2u)));
}

TEST_F(KvIndexServiceTest, MatchHonoursPodFilterWeightsAndHashes) {
  StartServer();
  (void)server_->index().Apply({"default/long", 0}, {"m", ""}, StoredBatch(4));
  (void)server_->index().Apply({"default/short", 0}, {"m", ""}, StoredBatch(2, "CPU"));

  v1::MatchRequest filtered = TokensRequest(4 * kBlockSize);
  filtered.add_pods("default/short");
  absl::StatusOr<v1::MatchResponse> response = Match(filtered);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->pods_size(), 1);
  EXPECT_EQ(response->pods(0).pod(), "default/short");

  v1::MatchRequest weighted = TokensRequest(4 * kBlockSize);
  (*weighted.mutable_medium_weights())["GPU"] = 0.5;
  response = Match(weighted);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_DOUBLE_EQ(response->pods(0).score(), 2);  // 4 GPU blocks at 0.5

  // Gateways may send the index hashes instead of tokens.
  v1::MatchRequest hashed;
  hashed.set_model("m");
  for (uint64_t hash : HashPrefix(ContextSeed("m", "", kBlockSize), Tokens(3 * kBlockSize), kBlockSize)) {
    hashed.add_block_hashes(hash);
  }
  response = Match(hashed);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->pods_size(), 2);
  EXPECT_EQ(response->pods(0).pod(), "default/long");
  EXPECT_EQ(response->pods(0).matched_blocks(), 3u);
}

// README: a block scores the highest weight among the tiers holding it; a tier
// without a weight weighs 1.0; best first by score, then matched blocks, then key.
TEST_F(KvIndexServiceTest, MatchWeighsUnlistedTiersOneAndOrdersByScore) {
  StartServer();
  (void)server_->index().Apply({"default/gpu", 0}, {"m", ""}, StoredBatch(4, "GPU"));
  (void)server_->index().Apply({"default/cpu", 0}, {"m", ""}, StoredBatch(3, "CPU"));
  (void)server_->index().Apply({"default/disk", 0}, {"m", ""}, StoredBatch(2, "DISK"));
  (void)server_->index().Apply({"default/both", 0}, {"m", ""}, StoredBatch(4, "GPU"));
  (void)server_->index().Apply({"default/both", 0}, {"m", ""}, StoredBatch(4, "CPU"));  // the same blocks, offloaded

  // (pod, score) in answer order.
  auto scores = [this](const std::map<std::string, double>& weights) {
    v1::MatchRequest request = TokensRequest(4 * kBlockSize);
    for (const auto& [medium, weight] : weights) (*request.mutable_medium_weights())[medium] = weight;
    absl::StatusOr<v1::MatchResponse> response = Match(request);
    EXPECT_TRUE(response.ok()) << response.status();
    std::vector<std::pair<std::string, double>> out;
    if (response.ok()) {
      for (const v1::PodMatch& pod : response->pods()) out.emplace_back(pod.pod(), pod.score());
    }
    return out;
  };

  // No weights: every tier weighs 1.0; "both" and "gpu" tie on score and blocks, the key decides.
  EXPECT_THAT(scores({}), ElementsAre(Pair("default/both", 4.0), Pair("default/gpu", 4.0),
                                      Pair("default/cpu", 3.0), Pair("default/disk", 2.0)));
  // CPU above GPU; GPU and DISK unlisted weigh 1.0. A block on GPU and CPU scores its best tier.
  EXPECT_THAT(scores({{"CPU", 2.0}}), ElementsAre(Pair("default/both", 8.0), Pair("default/cpu", 6.0),
                                                  Pair("default/gpu", 4.0), Pair("default/disk", 2.0)));
  // Fewer blocks on a heavier tier beat more blocks on a lighter one; CPU unlisted weighs 1.0.
  EXPECT_THAT(scores({{"GPU", 0.5}, {"DISK", 3.0}}), ElementsAre(Pair("default/disk", 6.0), Pair("default/both", 4.0),
                                                                 Pair("default/cpu", 3.0), Pair("default/gpu", 2.0)));
  // Zero is a weight too: at equal scores more matched blocks come first.
  EXPECT_THAT(scores({{"GPU", 0.0}, {"CPU", 0.0}}), ElementsAre(Pair("default/disk", 2.0), Pair("default/both", 0.0),
                                                                Pair("default/gpu", 0.0), Pair("default/cpu", 0.0)));
  // A weight for a tier nobody holds changes nothing.
  EXPECT_THAT(scores({{"NVME", 9.0}}), ElementsAre(Pair("default/both", 4.0), Pair("default/gpu", 4.0),
                                                   Pair("default/cpu", 3.0), Pair("default/disk", 2.0)));

  // The tiers themselves are reported whatever the weights.
  v1::MatchRequest request = TokensRequest(4 * kBlockSize);
  (*request.mutable_medium_weights())["CPU"] = 2.0;
  absl::StatusOr<v1::MatchResponse> response = Match(request);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->pods_size(), 4);
  EXPECT_THAT(response->pods(0).blocks_by_medium(), UnorderedElementsAre(Pair("GPU", 4u), Pair("CPU", 4u)));
  EXPECT_EQ(response->pods(0).matched_blocks(), 4u);
  EXPECT_THAT(response->pods(1).blocks_by_medium(), UnorderedElementsAre(Pair("CPU", 3u)));
  EXPECT_THAT(response->pods(3).blocks_by_medium(), UnorderedElementsAre(Pair("DISK", 2u)));
}

TEST_F(KvIndexServiceTest, MatchOfUnknownModelIsEmptyOk) {
  StartServer();
  v1::MatchRequest request = TokensRequest(64);
  request.set_model("never-seen");
  absl::StatusOr<v1::MatchResponse> response = Match(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->pods(), IsEmpty());
}

TEST_F(KvIndexServiceTest, BadMatchRequestsAreInvalidArgument) {
  ServerOptions options;
  options.service.max_match_tokens = 100;
  StartServer(std::move(options));

  v1::MatchRequest empty_model = TokensRequest(32);
  empty_model.clear_model();
  v1::MatchRequest no_tokens;
  no_tokens.set_model("m");
  v1::MatchRequest both = TokensRequest(32);
  both.add_block_hashes(5);
  v1::MatchRequest too_many_tokens = TokensRequest(101);
  v1::MatchRequest too_many_hashes;
  too_many_hashes.set_model("m");
  for (int i = 0; i < 101; ++i) too_many_hashes.add_block_hashes(i);
  v1::MatchRequest bad_weight = TokensRequest(32);
  (*bad_weight.mutable_medium_weights())["GPU"] = -1;

  constexpr char kOneInput[] = "exactly one of token_ids and block_hashes must be given";
  for (const auto& [request, message] : std::vector<std::pair<v1::MatchRequest, std::string>>{
           {empty_model, "model is required"},
           {no_tokens, kOneInput},
           {both, kOneInput},
           {too_many_tokens, "Match carries 101 token_ids; the limit is 100 (--max_match_tokens)"},
           {too_many_hashes, "Match carries 101 block_hashes; the limit is 100 (--max_match_tokens)"},
           {bad_weight, "medium_weights[\"GPU\"] must be finite and >= 0"}}) {
    absl::StatusOr<v1::MatchResponse> response = Match(request);
    EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument) << request.ShortDebugString();
    EXPECT_EQ(response.status().message(), message) << request.ShortDebugString();
  }
  // Exactly at the limit is fine.
  EXPECT_TRUE(Match(TokensRequest(100)).ok());

  absl::StatusOr<v1::GetStatsResponse> stats = client_->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->matches(), 1u);
  EXPECT_EQ(stats->match_errors(), 6u);
}

TEST_F(KvIndexServiceTest, MatchWithMultimodalInputsAndSaltFindsOnlyThoseBlocks) {
  StartServer();
  // Two pods hold the same placeholder tokens for different images; one a salted prompt.
  const std::vector<uint32_t> prompt = {9, 32000, 32000, 32000};
  auto image = [](const std::string& id, int64_t relative) {
    return ExtraKey{.kind = ExtraKey::Kind::kList,
                    .items = {ExtraKey{.kind = ExtraKey::Kind::kList,
                                       .items = {ExtraKey{.kind = ExtraKey::Kind::kStr, .bytes = id},
                                                 ExtraKey{.kind = ExtraKey::Kind::kInt, .number = relative}}}}};
  };
  for (const std::string id : {"img-a", "img-b"}) {
    BlockStored e{.block_hashes = {1, 2}, .token_ids = prompt, .block_size = 2, .medium = "GPU"};
    e.extra_keys = {image(id, 1), image(id, -1)};
    EventBatch batch;
    batch.events.push_back(e);
    (void)server_->index().Apply({"default/" + id, 0}, {"m", ""}, batch);
  }
  BlockStored salted{.block_hashes = {1, 2}, .token_ids = prompt, .block_size = 2, .medium = "GPU"};
  salted.cache_salt = "tenant";
  EventBatch batch;
  batch.events.push_back(salted);
  (void)server_->index().Apply({"default/salted", 0}, {"m", ""}, batch);

  auto pods = [this, &prompt](const std::string& salt, const std::string& image_id) {
    v1::MatchRequest request;
    request.set_model("m");
    request.mutable_token_ids()->Add(prompt.begin(), prompt.end());
    request.set_cache_salt(salt);
    if (!image_id.empty()) {
      v1::MultimodalInput* input = request.add_mm_inputs();
      input->set_identifier(image_id);
      input->set_offset(1);
      input->set_length(3);
    }
    absl::StatusOr<v1::MatchResponse> response = Match(request);
    EXPECT_TRUE(response.ok()) << response.status();
    std::vector<std::pair<std::string, uint32_t>> out;
    if (response.ok()) {
      for (const v1::PodMatch& pod : response->pods()) out.emplace_back(pod.pod(), pod.matched_blocks());
    }
    return out;
  };
  EXPECT_THAT(pods("", "img-a"), ElementsAre(Pair("default/img-a", 2)));
  EXPECT_THAT(pods("", "img-b"), ElementsAre(Pair("default/img-b", 2)));
  EXPECT_THAT(pods("tenant", ""), ElementsAre(Pair("default/salted", 2)));
  EXPECT_THAT(pods("", ""), ElementsAre());
  EXPECT_THAT(pods("other", ""), ElementsAre());

  v1::MatchRequest by_hashes;
  by_hashes.set_model("m");
  by_hashes.add_block_hashes(1);
  by_hashes.set_cache_salt("tenant");
  v1::MatchRequest empty_input = TokensRequest(32);
  empty_input.add_mm_inputs()->set_identifier("img-a");
  for (const auto& [request, message] : std::vector<std::pair<v1::MatchRequest, std::string>>{
           {by_hashes, "cache_salt and mm_inputs go with token_ids (block_hashes already include them)"},
           {empty_input, "mm_inputs[0] needs an identifier and a length of at least 1"}}) {
    absl::StatusOr<v1::MatchResponse> response = Match(request);
    EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(response.status().message(), message);
  }
}

TEST_F(KvIndexServiceTest, OversizedMessageIsResourceExhausted) {
  ServerOptions options;
  options.max_message_bytes = 64 << 10;
  StartServer(std::move(options));
  absl::StatusOr<v1::MatchResponse> response = Match(TokensRequest(100000));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kResourceExhausted) << response.status();
}

TEST_F(KvIndexServiceTest, RandomRequestsNeverCrashTheServer) {
  StartServer();
  (void)server_->index().Apply({"default/long", 0}, {"m", ""}, StoredBatch(4));
  std::mt19937 random(42);
  auto pick = [&random](uint32_t n) { return std::uniform_int_distribution<uint32_t>(0, n - 1)(random); };
  // Any valid UTF-8 (proto3 strings must be; see the test below for invalid).
  auto junk = [&](size_t max_len) {
    static constexpr const char* kPieces[] = {"a", "/", ":", ".", " ", "-", "\x01", "\xc3\xa9", "\xe2\x82\xac",
                                              "\xf0\x9f\x98\x80", "0", "Z", "%", "\\"};
    std::string text;
    for (uint32_t n = pick(static_cast<uint32_t>(max_len) + 1); n > 0; --n) text += kPieces[pick(std::size(kPieces))];
    return text;
  };
  for (int i = 0; i < 300; ++i) {
    v1::MatchRequest request;
    if (pick(4) != 0) request.set_model(pick(2) ? "m" : junk(20));
    if (pick(3) == 0) request.set_lora_name(junk(10));
    for (uint32_t n = pick(200); n > 0; --n) request.add_token_ids(pick(3) ? n : static_cast<uint32_t>(random()));
    for (uint32_t n = pick(3) == 0 ? pick(20) : 0; n > 0; --n) request.add_block_hashes(random());
    for (uint32_t n = pick(3); n > 0; --n) request.add_pods(pick(2) ? "default/long" : junk(30));
    for (uint32_t n = pick(3); n > 0; --n) (*request.mutable_medium_weights())[junk(5)] = pick(5) - 1.5;
    absl::StatusOr<v1::MatchResponse> response = Match(request);
    EXPECT_THAT(response.status().code(),
                ::testing::AnyOf(absl::StatusCode::kOk, absl::StatusCode::kInvalidArgument));

    v1::Pod pod = GoodPod(pick(4) ? absl::StrCat("p", pick(20)) : junk(300));
    if (pick(2)) pod.set_namespace_(junk(20));
    if (pick(2)) pod.set_ip(pick(2) ? junk(40) : "::1");
    if (pick(2)) pod.set_phase(junk(10));
    if (pick(2)) pod.set_events_port(static_cast<uint32_t>(random()));
    if (pick(2)) pod.set_replay_port(static_cast<uint32_t>(random()));
    if (pick(2)) pod.set_dp_size(pick(2) ? pick(8) : static_cast<uint32_t>(random()));
    if (pick(2)) pod.set_topic(junk(20));
    for (uint32_t n = pick(5); n > 0; --n) (*pod.mutable_labels())[junk(20)] = junk(20);
    v1::PodUpdate update;
    switch (pick(4)) {
      case 0: *update.mutable_upsert() = pod; break;
      case 1: update.set_delete_(pick(2) ? PodKey(PodFromProto(pod)) : junk(50)); break;
      case 2: *update.mutable_snapshot()->add_pods() = pod; break;
      default: break;  // empty update
    }
    ASSERT_EQ(Sync({update}).size(), 1u);
  }
  EXPECT_TRUE(client_->ListPods().ok());
  EXPECT_TRUE(client_->GetStats().ok());
}

TEST_F(KvIndexServiceTest, InvalidUtf8IsRefusedWithoutHarm) {
  StartServer();
  v1::MatchRequest request = TokensRequest(32);
  request.set_model("\xff\xfe");
  const absl::Status refused = Match(request).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("does not parse"));
  v1::Pod pod = GoodPod("\xc3");
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client_->SyncPods({Upsert(pod)});
  EXPECT_FALSE(acks.ok());
  EXPECT_TRUE(Match(TokensRequest(32)).ok());
  EXPECT_THAT(client_->ListPods()->pods(), IsEmpty());
}

// ---------------------------------------------------------------- SyncPods

TEST_F(KvIndexServiceTest, SyncPodsAcksEveryUpdateInOrder) {
  StartServer();
  v1::Pod pending = GoodPod("pending");
  pending.set_phase("Pending");
  v1::PodUpdate remove;
  remove.set_delete_("default/a");
  v1::PodUpdate remove_unknown;
  remove_unknown.set_delete_("default/never");

  const std::vector<v1::PodUpdateAck> acks =
      Sync({Upsert(GoodPod("a")), Upsert(GoodPod("a")), Upsert(pending), remove, remove_unknown, v1::PodUpdate()});
  ASSERT_EQ(acks.size(), 6u);
  for (size_t i = 0; i < acks.size(); ++i) EXPECT_EQ(acks[i].update_index(), i);
  EXPECT_EQ(acks[0].pod(), "default/a");
  EXPECT_EQ(acks[0].outcome(), v1::POD_OUTCOME_SUBSCRIBED) << acks[0].reason();
  EXPECT_EQ(acks[1].outcome(), v1::POD_OUTCOME_UPDATED) << acks[1].reason();
  EXPECT_EQ(acks[2].pod(), "default/pending");
  EXPECT_EQ(acks[2].outcome(), v1::POD_OUTCOME_IGNORED);
  EXPECT_THAT(acks[2].reason(), HasSubstr("Pending"));
  EXPECT_EQ(acks[3].pod(), "default/a");
  EXPECT_EQ(acks[3].outcome(), v1::POD_OUTCOME_REMOVED);
  EXPECT_EQ(acks[3].reason(), "");
  EXPECT_EQ(acks[4].pod(), "default/never");
  EXPECT_EQ(acks[4].outcome(), v1::POD_OUTCOME_IGNORED);
  EXPECT_EQ(acks[4].reason(), "unknown pod");
  EXPECT_EQ(acks[5].pod(), "");
  EXPECT_EQ(acks[5].outcome(), v1::POD_OUTCOME_REJECTED);
  EXPECT_EQ(acks[5].reason(), "empty PodUpdate: set one of upsert, delete, snapshot");
}

TEST_F(KvIndexServiceTest, BadPodsAreRejectedWithReasonAndServerStaysUp) {
  StartServer();
  v1::Pod no_name = GoodPod("");
  v1::Pod bad_port = GoodPod("p1");
  bad_port.set_events_port(70000);
  v1::Pod bad_replay_port = GoodPod("p1b");
  bad_replay_port.set_replay_port(65536);
  v1::Pod bad_ip = GoodPod("p2");
  bad_ip.set_ip("not-an-ip");
  v1::Pod huge_dp = GoodPod("p3");
  huge_dp.set_dp_size(1000000000);
  v1::Pod dp_over_limit = GoodPod("p4");
  dp_over_limit.set_dp_size(1025);
  v1::Pod many_labels = GoodPod("p5");
  for (int i = 0; i < 1000; ++i) (*many_labels.mutable_labels())[absl::StrCat("k", i)] = "v";

  for (const v1::Pod& pod : {no_name, bad_port, bad_replay_port, bad_ip, huge_dp, dp_over_limit, many_labels}) {
    const std::vector<v1::PodUpdateAck> acks = Sync({Upsert(pod)});
    ASSERT_EQ(acks.size(), 1u);
    EXPECT_EQ(acks[0].outcome(), v1::POD_OUTCOME_REJECTED) << pod.ShortDebugString();
    EXPECT_FALSE(acks[0].reason().empty());
  }
  absl::StatusOr<v1::ListPodsResponse> pods = client_->ListPods();
  ASSERT_TRUE(pods.ok()) << pods.status();
  EXPECT_THAT(pods->pods(), IsEmpty());
  EXPECT_TRUE(Match(TokensRequest(64)).ok());
}

// A pod without a namespace would be keyed "/name": rejected like one without a
// name, by upsert, in a snapshot (in its place among the acks) and from --pods_file.
TEST_F(KvIndexServiceTest, PodWithoutNamespaceIsRejectedLikeOneWithoutName) {
  ServerOptions options;
  Pod from_file = PodFromProto(GoodPod("from-file"));
  from_file.ns.clear();
  options.initial_pods = {from_file};
  StartServer(std::move(options));
  v1::Pod no_namespace = GoodPod("a");
  no_namespace.clear_namespace_();
  std::vector<v1::PodUpdateAck> acks = Sync({Upsert(no_namespace)});
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].outcome(), v1::POD_OUTCOME_REJECTED);
  EXPECT_EQ(acks[0].pod(), "/a");
  EXPECT_EQ(acks[0].reason(), "namespace: required");

  v1::PodUpdate snapshot;
  *snapshot.mutable_snapshot()->add_pods() = GoodPod("b");
  *snapshot.mutable_snapshot()->add_pods() = no_namespace;
  *snapshot.mutable_snapshot()->add_pods() = GoodPod("c");
  acks = Sync({snapshot});
  ASSERT_EQ(acks.size(), 1u);
  std::vector<std::pair<std::string, v1::PodOutcome>> outcomes;
  for (const v1::PodAck& ack : acks[0].pods()) outcomes.emplace_back(ack.pod(), ack.outcome());
  EXPECT_THAT(outcomes, ElementsAre(Pair("default/b", v1::POD_OUTCOME_SUBSCRIBED),
                                    Pair("/a", v1::POD_OUTCOME_REJECTED),
                                    Pair("default/c", v1::POD_OUTCOME_SUBSCRIBED)));
  EXPECT_EQ(acks[0].pods(1).reason(), "namespace: required");

  absl::StatusOr<v1::ListPodsResponse> pods = client_->ListPods();
  ASSERT_TRUE(pods.ok()) << pods.status();
  std::vector<std::string> keys;
  for (const v1::PodInfo& pod : pods->pods()) keys.push_back(pod.key());
  EXPECT_THAT(keys, ElementsAre("default/b", "default/c"));
}

TEST_F(KvIndexServiceTest, SnapshotReplacesTheKnownSet) {
  StartServer();
  Sync({Upsert(GoodPod("a")), Upsert(GoodPod("b"))});
  (void)server_->index().Apply({"default/a", 0}, {"m", ""}, StoredBatch(4));

  v1::PodUpdate snapshot;
  *snapshot.mutable_snapshot()->add_pods() = GoodPod("b");
  *snapshot.mutable_snapshot()->add_pods() = GoodPod("c");
  const std::vector<v1::PodUpdateAck> acks = Sync({snapshot});
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].outcome(), v1::POD_OUTCOME_UPDATED);
  std::vector<std::pair<std::string, v1::PodOutcome>> outcomes;
  for (const v1::PodAck& ack : acks[0].pods()) outcomes.emplace_back(ack.pod(), ack.outcome());
  EXPECT_THAT(outcomes, UnorderedElementsAre(Pair("default/a", v1::POD_OUTCOME_REMOVED),
                                             Pair("default/b", v1::POD_OUTCOME_UPDATED),
                                             Pair("default/c", v1::POD_OUTCOME_SUBSCRIBED)));
  EXPECT_THAT(acks[0].reason(), AllOf(HasSubstr("1 removed"), HasSubstr("1 subscribed")));

  absl::StatusOr<v1::ListPodsResponse> pods = client_->ListPods();
  ASSERT_TRUE(pods.ok()) << pods.status();
  std::vector<std::string> keys;
  for (const v1::PodInfo& pod : pods->pods()) keys.push_back(pod.key());
  EXPECT_THAT(keys, ElementsAre("default/b", "default/c"));
  // The removed pod's blocks are gone.
  absl::StatusOr<v1::MatchResponse> match = Match(TokensRequest(64));
  ASSERT_TRUE(match.ok());
  EXPECT_THAT(match->pods(), IsEmpty());
}

TEST_F(KvIndexServiceTest, EmptySnapshotRemovesEverything) {
  StartServer();
  Sync({Upsert(GoodPod("a"))});
  v1::PodUpdate snapshot;
  snapshot.mutable_snapshot();
  const std::vector<v1::PodUpdateAck> acks = Sync({snapshot});
  ASSERT_EQ(acks.size(), 1u);
  ASSERT_EQ(acks[0].pods_size(), 1);
  EXPECT_EQ(acks[0].pods(0).outcome(), v1::POD_OUTCOME_REMOVED);
  EXPECT_THAT(client_->ListPods()->pods(), IsEmpty());
}

TEST_F(KvIndexServiceTest, BrokenStreamLeavesPodsAsTheyAre) {
  StartServer();
  {
    grpc::ClientContext context;
    auto stream = stub_->SyncPods(&context);
    ASSERT_TRUE(stream->Write(Upsert(GoodPod("a"))));
    v1::PodUpdateAck ack;
    ASSERT_TRUE(stream->Read(&ack));
    context.TryCancel();  // the control plane goes away mid-stream
    stream->Finish();
  }
  absl::StatusOr<v1::ListPodsResponse> pods = client_->ListPods();
  ASSERT_TRUE(pods.ok());
  ASSERT_EQ(pods->pods_size(), 1);
  EXPECT_EQ(pods->pods(0).key(), "default/a");
}

// ---------------------------------------------------------------- ListPods, GetStats

// ListPods pages in key order; page_size 0 (what older callers send) is every
// pod at once, refused with RESOURCE_EXHAUSTED when they do not fit in one
// message; the client library pages, so any number fits.
TEST_F(KvIndexServiceTest, ListPodsPagesInKeyOrderAndRefusesWhatDoesNotFitInOneMessage) {
  ServerOptions options;
  options.max_message_bytes = 16 << 10;
  StartServer(options);
  std::vector<v1::PodUpdate> updates;
  for (int i = 0; i < 25; ++i) {
    v1::Pod pod = GoodPod(absl::StrCat("p", i < 10 ? "0" : "", i));
    pod.mutable_labels()->clear();  // recorded, not followed
    (*pod.mutable_annotations())["note"] = std::string(1000, 'x');
    updates.push_back(Upsert(pod));
  }
  Sync(updates);

  std::vector<std::string> keys;
  v1::ListPodsRequest request;
  request.set_page_size(10);
  std::vector<int> sizes;
  do {
    absl::StatusOr<v1::ListPodsResponse> page = client_->ListPods(request);
    ASSERT_TRUE(page.ok()) << page.status();
    sizes.push_back(page->pods_size());
    for (const v1::PodInfo& pod : page->pods()) keys.push_back(pod.key());
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  EXPECT_THAT(sizes, ElementsAre(10, 10, 5));
  ASSERT_EQ(keys.size(), 25u);
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(keys.front(), "default/p00");
  EXPECT_EQ(keys.back(), "default/p24");

  absl::StatusOr<v1::ListPodsResponse> all = client_->ListPods(v1::ListPodsRequest());
  EXPECT_EQ(all.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(all.status().message(), HasSubstr("ask for fewer per page (ListPodsRequest.page_size)"));
  absl::StatusOr<v1::ListPodsResponse> paged = client_->ListPods();
  ASSERT_TRUE(paged.ok()) << paged.status();
  EXPECT_EQ(paged->pods_size(), 25);
  EXPECT_TRUE(paged->next_page_token().empty());
}

TEST_F(KvIndexServiceTest, ListPodsShowsPlanSubscriptionAndBlocks) {
  StartServer();
  v1::Pod two_ranks = GoodPod("a");
  two_ranks.set_dp_size(2);
  (*two_ranks.mutable_labels())["model.aibrix.ai/lora-id"] = "adapter-1";
  v1::Pod disabled = GoodPod("off");
  disabled.mutable_labels()->clear();
  Sync({Upsert(two_ranks), Upsert(disabled)});
  (void)server_->index().Apply({"default/a", 1}, {"m", ""}, StoredBatch(3, "CPU"));

  absl::StatusOr<v1::ListPodsResponse> response = client_->ListPods();
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->pods_size(), 2);
  const v1::PodInfo& a = response->pods(0);
  EXPECT_EQ(a.key(), "default/a");
  EXPECT_EQ(a.pod().name(), "a");
  EXPECT_EQ(a.pod().dp_size(), 2u);
  EXPECT_TRUE(a.pod().has_replay_port());
  EXPECT_TRUE(a.subscribable());
  EXPECT_TRUE(a.subscribed());
  EXPECT_EQ(a.model(), "m");
  EXPECT_EQ(a.lora_name(), "adapter-1");
  ASSERT_EQ(a.workers_size(), 2);
  EXPECT_EQ(a.workers(0).dp_rank(), 0u);
  EXPECT_EQ(a.workers(0).blocks(), 0u);
  EXPECT_EQ(a.workers(1).dp_rank(), 1u);
  EXPECT_EQ(a.workers(1).blocks(), 3u);
  EXPECT_THAT(a.workers(1).blocks_by_medium(), UnorderedElementsAre(Pair("CPU", 3u)));
  EXPECT_FALSE(a.workers(0).state().empty());

  const v1::PodInfo& off = response->pods(1);
  EXPECT_EQ(off.key(), "default/off");
  EXPECT_FALSE(off.subscribable());
  EXPECT_FALSE(off.subscribed());
  EXPECT_FALSE(off.reason().empty());
  EXPECT_THAT(off.workers(), IsEmpty());
}

TEST_F(KvIndexServiceTest, GetStatsCountsPodsIndexAndMatches) {
  StartServer();
  Sync({Upsert(GoodPod("a")), Upsert(GoodPod("b"))});
  (void)server_->index().Apply({"default/a", 0}, {"m", ""}, StoredBatch(4));
  (void)server_->index().Apply({"default/b", 0}, {"m", ""}, StoredBatch(2));
  ASSERT_TRUE(Match(TokensRequest(64)).ok());
  ASSERT_TRUE(Match(TokensRequest(32)).ok());

  absl::StatusOr<v1::GetStatsResponse> stats = client_->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pods(), 2u);
  EXPECT_EQ(stats->subscribed_pods(), 2u);
  EXPECT_EQ(stats->workers(), 2u);
  EXPECT_EQ(stats->blocks(), 4u);   // distinct index hashes
  EXPECT_EQ(stats->entries(), 6u);  // (block, worker) pairs
  EXPECT_GT(stats->memory_bytes(), 0u);
  EXPECT_EQ(stats->matches(), 2u);
  EXPECT_EQ(stats->match_errors(), 0u);
  // Refused calls count as errors, whatever refused them.
  ASSERT_EQ(Match(v1::MatchRequest()).status().code(), absl::StatusCode::kInvalidArgument);
  stats = client_->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->matches(), 2u);
  EXPECT_EQ(stats->match_errors(), 1u);
  EXPECT_GE(stats->uptime_seconds(), 0);
}

TEST_F(KvIndexServiceTest, InitialPodsAreAppliedAtStart) {
  ServerOptions options;
  options.initial_pods = {PodFromProto(GoodPod("from-file"))};
  StartServer(std::move(options));
  absl::StatusOr<v1::ListPodsResponse> pods = client_->ListPods();
  ASSERT_TRUE(pods.ok());
  ASSERT_EQ(pods->pods_size(), 1);
  EXPECT_EQ(pods->pods(0).key(), "default/from-file");
  EXPECT_TRUE(pods->pods(0).subscribed());
}

TEST_F(KvIndexServiceTest, KvEventSyncOffRecordsPodsWithoutSubscribing) {
  ServerOptions options;
  options.manager.sync_enabled = false;
  StartServer(std::move(options));
  const std::vector<v1::PodUpdateAck> acks = Sync({Upsert(GoodPod("a"))});
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].outcome(), v1::POD_OUTCOME_IGNORED);
  EXPECT_THAT(acks[0].reason(), HasSubstr("disabled"));
}

// ---------------------------------------------------------------- auth

class AuthTest : public KvIndexServiceTest {
 protected:
  void StartWithToken(bool all_rpcs) {
    ServerOptions options;
    options.auth = BearerAuth("s3cr3t-token", all_rpcs);
    StartServer(std::move(options));
  }

  grpc::StatusCode SyncWithMetadata(const std::string& authorization) {
    grpc::ClientContext context;
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    auto stream = stub_->SyncPods(&context);
    stream->Write(Upsert(GoodPod("a")));
    stream->WritesDone();
    for (v1::PodUpdateAck ack; stream->Read(&ack);) {
    }
    return stream->Finish().error_code();
  }
};

TEST_F(AuthTest, SyncPodsNeedsTheBearerToken) {
  StartWithToken(/*all_rpcs=*/false);
  EXPECT_EQ(SyncWithMetadata(""), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SyncWithMetadata("Bearer wrong"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SyncWithMetadata("Bearer s3cr3t-token-and-more"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SyncWithMetadata("Basic s3cr3t-token"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SyncWithMetadata("s3cr3t-token"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SyncWithMetadata("Bearer s3cr3t-token"), grpc::StatusCode::OK);
  EXPECT_EQ(SyncWithMetadata("bearer s3cr3t-token"), grpc::StatusCode::OK);
  // Nothing was applied by the refused streams... and the accepted one worked.
  EXPECT_EQ(client_->ListPods()->pods_size(), 1);

  // Other RPCs stay open without --auth_all_rpcs.
  EXPECT_TRUE(Match(TokensRequest(32)).ok());
  EXPECT_TRUE(client_->GetStats().ok());

  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = Client("s3cr3t-token")->SyncPods({Upsert(GoodPod("b"))});
  EXPECT_TRUE(acks.ok()) << acks.status();
  acks = Client("nope")->SyncPods({Upsert(GoodPod("b"))});
  EXPECT_EQ(acks.status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthTest, AllRpcsNeedTheTokenButHealthStaysOpen) {
  StartWithToken(/*all_rpcs=*/true);
  EXPECT_EQ(Match(TokensRequest(32)).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(client_->ListPods().status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(client_->GetStats().status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(SyncWithMetadata(""), grpc::StatusCode::UNAUTHENTICATED);

  std::unique_ptr<client::KvIndexClient> authed = Client("s3cr3t-token");
  EXPECT_TRUE(authed->Match(TokensRequest(32)).ok());
  EXPECT_TRUE(authed->ListPods().ok());
  EXPECT_TRUE(authed->GetStats().ok());

  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(&context, {}, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

// ---------------------------------------------------------------- health, shutdown

TEST_F(KvIndexServiceTest, HealthServesOverallAndKvIndex) {
  StartServer();
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  for (const std::string service : {"", "kvindex.v1.KvIndex"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, request, &response).ok()) << service;
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_EQ(health->Check(&context, unknown, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(KvIndexServiceTest, ShutdownDoesNotWaitForOpenSyncPodsStreams) {
  StartServer();
  grpc::ClientContext context;
  auto stream = stub_->SyncPods(&context);
  ASSERT_TRUE(stream->Write(Upsert(GoodPod("a"))));
  v1::PodUpdateAck ack;
  ASSERT_TRUE(stream->Read(&ack));  // the stream is open and idle now

  // The drain deadline is far away: a Shutdown that waited for the idle stream
  // would not return before it; one that cancels streams returns at once.
  std::atomic<bool> done{false};
  std::thread stopper([&] {
    server_->Shutdown(absl::Now() + absl::Minutes(5));
    done = true;
  });
  const bool returned = WaitFor([&] { return done.load(); }, absl::Seconds(60));
  if (!returned) context.TryCancel();  // lets the test end (after the deadline) instead of hanging
  stopper.join();
  ASSERT_TRUE(returned) << "Shutdown waited for an idle SyncPods stream";
  EXPECT_FALSE(stream->Read(&ack));
  EXPECT_NE(stream->Finish().error_code(), grpc::StatusCode::OK);
}

}  // namespace
}  // namespace kvindex::server
