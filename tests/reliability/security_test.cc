// Security against a real kvindex-server process: the SyncPods token (absent,
// wrong, right; state untouched by refused streams), and the limits on what
// callers may send (message size, pods, labels, tokens, absurd values). TLS and
// mTLS end to end are tests/server/tls_test.cc; the constant-time comparison is
// tests/server/bearer_auth_test.cc and ConstantTimeEqualsTakesTheSameTime here.

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/kvindex_client.h"
#include "core/pod.h"
#include "gtest/gtest.h"
#include "server/bearer_auth.h"
#include "tests/reliability/sim_process.h"
#include "tests/server/server_process.h"

namespace kvindex::testing {
namespace {

std::unique_ptr<client::KvIndexClient> Client(const std::string& address, const std::string& token = "",
                                              int max_message_bytes = 64 << 20) {
  client::ClientOptions options;
  options.server = address;
  options.token = token;
  options.max_message_bytes = max_message_bytes;
  options.timeout = absl::Seconds(60);
  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client = client::KvIndexClient::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return *std::move(client);
}

v1::Pod GoodPod(const std::string& name) {
  v1::Pod pod;
  pod.set_namespace_("sec");
  pod.set_name(name);
  pod.set_ip("127.0.0.1");
  pod.set_phase("Pending");
  pod.set_model("m");
  return pod;
}

v1::PodUpdate Upsert(const v1::Pod& pod) {
  v1::PodUpdate update;
  *update.mutable_upsert() = pod;
  return update;
}

TEST(SecurityTest, SyncPodsWithoutOrWithAWrongTokenIsRefusedAndChangesNothing) {
  const std::string token_file = WriteTempFile("token", "  correct-horse-battery-staple\n");
  absl::StatusOr<ServerProcess> server = StartServerProcess({absl::StrCat("--auth_token_file=", token_file)});
  ASSERT_TRUE(server.ok()) << server.status();
  for (const std::string& token : {std::string(), std::string("wrong"), std::string("correct-horse-battery-stapl"),
                                   std::string("correct-horse-battery-staple2"), std::string(4000, 'x')}) {
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = Client(server->address, token)->SyncPods({Upsert(GoodPod("a"))});
    EXPECT_EQ(acks.status().code(), absl::StatusCode::kUnauthenticated) << "token \"" << token.substr(0, 40) << "\"";
  }
  std::unique_ptr<client::KvIndexClient> reader = Client(server->address);
  EXPECT_EQ(reader->ListPods()->pods_size(), 0) << "a refused stream applied something";
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks =
      Client(server->address, "correct-horse-battery-staple")->SyncPods({Upsert(GoodPod("a"))});
  ASSERT_TRUE(acks.ok()) << acks.status();
  EXPECT_EQ(reader->ListPods()->pods_size(), 1);
}

TEST(SecurityTest, AbsurdPodValuesAreRejectedNamingTheField) {
  absl::StatusOr<ServerProcess> server = StartServerProcess({});
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::KvIndexClient> client = Client(server->address);
  struct Case {
    std::string field;
    v1::Pod pod;
  };
  std::vector<Case> cases;
  cases.push_back({"dp_size", GoodPod("dp")});
  cases.back().pod.set_dp_size(1000000000);
  cases.push_back({"events_port", GoodPod("port")});
  cases.back().pod.set_events_port(70000);
  cases.push_back({"replay_port", GoodPod("replay")});
  cases.back().pod.set_replay_port(70000);
  cases.push_back({"ip", GoodPod("ip")});
  cases.back().pod.set_ip("not-an-ip");
  cases.push_back({"labels", GoodPod("label")});
  (*cases.back().pod.mutable_labels())["big"] = std::string(10 << 20, 'l');  // 10 MB
  cases.push_back({"labels", GoodPod("many")});
  for (int i = 0; i < 300; ++i) (*cases.back().pod.mutable_labels())[absl::StrCat("k", i)] = "v";
  cases.push_back({"name", GoodPod(std::string(300, 'n'))});
  cases.push_back({"model", GoodPod("model")});
  cases.back().pod.set_model(std::string(1 << 20, 'm'));

  for (const Case& c : cases) {
    // What SyncPods answers: the pod is rejected, the reason names the field.
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client->SyncPods({Upsert(c.pod)});
    ASSERT_TRUE(acks.ok()) << c.field << ": " << acks.status();
    EXPECT_EQ((*acks)[0].outcome(), v1::POD_OUTCOME_REJECTED) << c.field;
    EXPECT_EQ((*acks)[0].reason().rfind(c.field + ":", 0), 0u) << c.field << ": " << (*acks)[0].reason().substr(0, 200);
    EXPECT_LT((*acks)[0].reason().size(), 400u) << "the reason must not echo a huge value back";
    // ... because ValidatePod says INVALID_ARGUMENT.
    Pod pod;
    pod.ns = c.pod.namespace_();
    pod.name = c.pod.name();
    pod.ip = c.pod.ip();
    pod.model = c.pod.model();
    pod.labels.insert(c.pod.labels().begin(), c.pod.labels().end());
    pod.events_port = c.pod.events_port();
    if (c.pod.has_replay_port()) pod.replay_port = c.pod.replay_port();
    pod.dp_size = c.pod.dp_size();
    EXPECT_EQ(ValidatePod(pod).code(), absl::StatusCode::kInvalidArgument) << c.field;
  }
  EXPECT_EQ(client->ListPods()->pods_size(), 0);
  EXPECT_TRUE(client->GetStats().ok()) << "the server is still up";
}

TEST(SecurityTest, MessagePodAndTokenLimits) {
  absl::StatusOr<ServerProcess> server =
      StartServerProcess({"--max_message_bytes=1048576", "--max_pods=5", "--max_match_tokens=4096"});
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::KvIndexClient> client = Client(server->address);

  // A message over --max_message_bytes never reaches the service.
  v1::Pod fat = GoodPod("fat");
  (*fat.mutable_labels())["big"] = std::string(2 << 20, 'f');
  EXPECT_EQ(client->SyncPods({Upsert(fat)}).status().code(), absl::StatusCode::kResourceExhausted);

  // --max_pods: the sixth new pod is rejected, updates of known ones are not.
  std::vector<v1::PodUpdate> updates;
  for (int i = 0; i < 6; ++i) updates.push_back(Upsert(GoodPod(absl::StrCat("p", i))));
  updates.push_back(Upsert(GoodPod("p0")));
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client->SyncPods(updates);
  ASSERT_TRUE(acks.ok()) << acks.status();
  for (int i = 0; i < 5; ++i) EXPECT_NE((*acks)[i].outcome(), v1::POD_OUTCOME_REJECTED) << i;
  EXPECT_EQ((*acks)[5].outcome(), v1::POD_OUTCOME_REJECTED);
  EXPECT_NE((*acks)[6].outcome(), v1::POD_OUTCOME_REJECTED);
  EXPECT_EQ(client->ListPods()->pods_size(), 5);

  // --max_match_tokens.
  v1::MatchRequest match;
  match.set_model("m");
  for (int i = 0; i < 4097; ++i) match.add_token_ids(i);
  EXPECT_EQ(client->Match(match).status().code(), absl::StatusCode::kInvalidArgument);
  match.mutable_token_ids()->RemoveLast();
  EXPECT_TRUE(client->Match(match).ok());
  v1::MatchRequest hashes;
  hashes.set_model("m");
  for (int i = 0; i < 4097; ++i) hashes.add_block_hashes(i);
  EXPECT_EQ(client->Match(hashes).status().code(), absl::StatusCode::kInvalidArgument);
}

// The token check's time does not depend on where a wrong token differs. A
// coarse check (the unit test reads the code path): the median time of
// comparisons that differ in the first byte and in the last byte are within a
// factor of 3 of each other for a 4 KiB token.
TEST(SecurityTest, ConstantTimeEqualsTakesTheSameTime) {
  const std::string token(4096, 'a');
  std::string first = token, last = token;
  first.front() = 'b';
  last.back() = 'b';
  auto median_ns = [&token](const std::string& presented) {
    std::vector<int64_t> samples;
    for (int i = 0; i < 301; ++i) {
      const auto start = std::chrono::steady_clock::now();
      bool equal = false;
      for (int k = 0; k < 20; ++k) equal |= server::ConstantTimeEquals(presented, token);
      const auto end = std::chrono::steady_clock::now();
      EXPECT_FALSE(equal);
      samples.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    }
    std::nth_element(samples.begin(), samples.begin() + 150, samples.end());
    return samples[150];
  };
  const int64_t a = median_ns(first);
  const int64_t b = median_ns(last);
  EXPECT_LT(a, 3 * b) << a << " vs " << b;
  EXPECT_LT(b, 3 * a) << a << " vs " << b;
}

}  // namespace
}  // namespace kvindex::testing
