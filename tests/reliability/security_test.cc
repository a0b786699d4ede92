// Security against a real kvindex-server process: the SyncPods token (absent,
// wrong, right; state untouched by refused streams), and the limits on what
// callers may send (message size, pods, labels, tokens, absurd values). TLS and
// mTLS end to end are tests/server/tls_test.cc; the constant-time comparison is
// tests/server/bearer_auth_test.cc and ConstantTimeEqualsReadsEveryByteWhereverTheTokensDiffer here.

#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/kvindex_client.h"
#include "core/ingest/pod.h"
#include "gtest/gtest.h"
#include "server/bearer_auth.h"
#include "tests/reliability/sim_process.h"
#include "tests/server/server_process.h"
#include "tests/testing/clients.h"
#include "tests/testing/pods.h"

namespace kvindex::testing {
namespace {

using ::kvindex::testutil::Upsert;

std::unique_ptr<client::KvIndexClient> Client(const std::string& address, const std::string& token = "",
                                              int max_message_bytes = 64 << 20) {
  return testutil::Connect(address, {.token = token, .max_message_bytes = max_message_bytes,
                                     .timeout = absl::Seconds(60)});
}

// A valid pod the server records and never subscribes to (Pending).
v1::Pod GoodPod(const std::string& name) {
  v1::Pod pod = testutil::PendingPod("sec", name);
  pod.set_model("m");
  return pod;
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

// The token check's time does not depend on where a wrong token differs,
// checked by structure rather than by a clock: the comparison reads every byte
// of the presented token (and the same bytes of the real one) whatever the
// contents, so tokens that differ in their first byte, their last byte or not at
// all make exactly the same reads, and a wrong length reads no less.
struct Read {
  bool presented;  // a byte of the presented token (else of the real one)
  size_t index;
  bool operator==(const Read&) const = default;
};

std::ostream& operator<<(std::ostream& out, const Read& read) {
  return out << (read.presented ? "presented[" : "token[") << read.index << "]";
}

TEST(SecurityTest, ConstantTimeEqualsReadsEveryByteWhereverTheTokensDiffer) {
  // The reads comparing `presented` with `token`, and the answer.
  auto trace = [](const std::string& presented, const std::string& token) {
    std::vector<Read> reads;
    const bool equal = server::internal::ConstantTimeEqualsWith(
        presented, token, [&](absl::string_view s, size_t i) {
          reads.push_back(Read{s.data() == presented.data(), i});
          return static_cast<unsigned char>(s[i]);
        });
    EXPECT_EQ(equal, server::ConstantTimeEquals(presented, token)) << "the function is its loop";
    return std::make_pair(equal, reads);
  };

  const std::string token = "correct-horse-battery-staple";
  std::vector<Read> every_byte;
  for (size_t i = 0; i < token.size(); ++i) {
    every_byte.push_back({true, i});
    every_byte.push_back({false, i});
  }
  std::string first = token, middle = token, last = token, all = token;
  first.front() = 'X';
  middle[token.size() / 2] = 'X';
  last.back() = 'X';
  for (char& c : all) c = '?';
  const std::string same = token;  // another buffer: reads tell the two apart by address
  EXPECT_EQ(trace(same, token), std::make_pair(true, every_byte));
  for (const std::string& wrong : {first, middle, last, all}) {
    EXPECT_EQ(trace(wrong, token), std::make_pair(false, every_byte)) << wrong;
  }

  // A wrong length: every presented byte is still read, against the real one
  // cyclically, so a prefix of the token is no faster to reject than junk.
  const std::string longer = token + "!";
  const auto [longer_equal, longer_reads] = trace(longer, token);
  EXPECT_FALSE(longer_equal);
  ASSERT_EQ(longer_reads.size(), 2 * longer.size());
  for (size_t i = 0; i < longer.size(); ++i) {
    EXPECT_EQ(longer_reads[2 * i], (Read{true, i}));
    EXPECT_EQ(longer_reads[2 * i + 1], (Read{false, i % token.size()}));
  }
  const std::string prefix = token.substr(0, 10);
  const std::string junk(10, '#');
  EXPECT_EQ(trace(prefix, token), trace(junk, token));
  EXPECT_FALSE(trace(prefix, token).first);
  EXPECT_EQ(trace(prefix, token).second.size(), 20u);
  // Nothing real to compare with: the presented bytes are still all read.
  const auto [empty_equal, empty_reads] = trace("abc", "");
  EXPECT_FALSE(empty_equal);
  EXPECT_EQ(empty_reads, (std::vector<Read>{{true, 0}, {true, 1}, {true, 2}}));
  EXPECT_TRUE(trace("", "").first);
  EXPECT_FALSE(trace("", token).first);
}

}  // namespace
}  // namespace kvindex::testing
