// kvindex-server as a real process: SIGTERM/SIGINT with calls in flight, flags
// and their KVINDEX_* environment fallbacks, --pods_file, start-up errors.

#include <signal.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/kvindex_client.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"

namespace kvindex::testing {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<client::KvIndexClient> ClientFor(const ServerProcess& server, absl::Duration timeout) {
  client::ClientOptions options;
  options.server = server.address;
  options.timeout = timeout;
  return *client::KvIndexClient::Create(options);
}

v1::MatchRequest BigMatch(size_t tokens) {
  v1::MatchRequest request;
  request.set_model("m");
  for (size_t i = 0; i < tokens; ++i) request.add_token_ids(static_cast<uint32_t>((i * 7919) % 200000));
  return request;
}

v1::PodUpdate UpsertPod(const std::string& name) {
  v1::PodUpdate update;
  v1::Pod* pod = update.mutable_upsert();
  pod->set_namespace_("default");
  pod->set_name(name);
  pod->set_ip("127.0.0.1");
  pod->set_phase("Running");
  pod->set_model("m");
  pod->set_events_port(1);
  pod->set_replay_port(0);
  (*pod->mutable_labels())["model.aibrix.ai/kv-events-enabled"] = "true";
  return update;
}

struct CallRecord {
  absl::Time start;
  absl::Time end;
  absl::StatusCode code;
};

// Clients keep calling Match with big prompts (so that each call spends
// milliseconds in the server) while the server gets `signal`. Returns the
// exit code and fills `calls`.
std::optional<int> SignalUnderLoad(int signal, std::vector<CallRecord>* calls, absl::Time* signalled,
                                   absl::Duration* exit_time) {
  absl::StatusOr<ServerProcess> server = StartServerProcess({});
  if (!server.ok()) {
    ADD_FAILURE() << server.status();
    return std::nullopt;
  }
  const v1::MatchRequest request = BigMatch(1000000);
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  *signalled = absl::InfiniteFuture();
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      std::unique_ptr<client::KvIndexClient> client = ClientFor(*server, absl::Seconds(10));
      while (!stop.load()) {
        CallRecord record{.start = absl::Now()};
        record.code = client->Match(request).status().code();
        record.end = absl::Now();
        if (record.code == absl::StatusCode::kOk) answered.fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        calls->push_back(record);
        if (record.code != absl::StatusCode::kOk && record.start > *signalled) break;
      }
    });
  }
  // Let the load settle, then signal while calls are in flight.
  while (answered.load() < 6) absl::SleepFor(absl::Milliseconds(5));
  {
    std::lock_guard<std::mutex> lock(mu);
    *signalled = absl::Now();
  }
  server->process->Signal(signal);
  const std::optional<int> code = server->process->Wait(absl::Seconds(10));
  *exit_time = absl::Now() - *signalled;
  stop.store(true);
  for (std::thread& thread : threads) thread.join();
  if (code != 0) ADD_FAILURE() << "server stderr:\n" << server->process->Stderr();
  EXPECT_THAT(server->process->Stderr(), HasSubstr("stopped"));
  return code;
}

void ExpectGracefulStop(int signal) {
  // Whether a call is in the server's hands at the instant of the signal is up
  // to the scheduler (on a loaded machine often not: a 4 MB request may still
  // be on its way); try until one straddles it. An attempt takes ~0.1-1 s.
  constexpr int kAttempts = 10;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::vector<CallRecord> calls;
    absl::Time signalled;
    absl::Duration exit_time;
    const std::optional<int> code = SignalUnderLoad(signal, &calls, &signalled, &exit_time);
    ASSERT_EQ(code, 0);
    EXPECT_LT(exit_time, absl::Seconds(5));
    int straddling_ok = 0;
    for (const CallRecord& call : calls) {
      if (call.start < signalled && call.end > signalled && call.code == absl::StatusCode::kOk) ++straddling_ok;
      // Calls are answered or refused, never cut off half way.
      EXPECT_THAT(call.code, ::testing::AnyOf(absl::StatusCode::kOk, absl::StatusCode::kUnavailable,
                                              absl::StatusCode::kCancelled))
          << "call of " << absl::FormatDuration(call.end - call.start);
    }
    if (straddling_ok > 0) return;  // an in-flight Match was answered after the signal
  }
  ADD_FAILURE() << "no Match in flight at the signal was answered in " << kAttempts << " attempts";
}

TEST(ServerProcessTest, SigtermAnswersInFlightMatchAndExitsZero) { ExpectGracefulStop(SIGTERM); }

TEST(ServerProcessTest, SigintStopsGracefullyToo) { ExpectGracefulStop(SIGINT); }

// The server cancels open SyncPods streams at once (the in-process test shows
// it does not wait for them); here the bound is the contract's 5 s, since gRPC
// also waits, at most the drain time, for idle clients to answer its GOAWAY
// ping, and a sync C++ client only answers while a thread waits on it.
TEST(ServerProcessTest, SigtermWithOpenSyncPodsStreamExitsInTime) {
  absl::StatusOr<ServerProcess> server = StartServerProcess({});
  ASSERT_TRUE(server.ok()) << server.status();
  // An idle control-plane stream stays open across the signal.
  auto stub = v1::KvIndex::NewStub(grpc::CreateChannel(server->address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->SyncPods(&context);
  ASSERT_TRUE(stream->Write(UpsertPod("a")));
  v1::PodUpdateAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.outcome(), v1::POD_OUTCOME_SUBSCRIBED);

  std::thread waiter([&] {
    EXPECT_FALSE(stream->Read(&ack));
    EXPECT_NE(stream->Finish().error_code(), grpc::StatusCode::OK);
  });
  const absl::Time start = absl::Now();
  server->process->Signal(SIGTERM);
  EXPECT_EQ(server->process->Wait(absl::Seconds(10)), 0) << server->process->Stderr();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << server->process->Stderr();
  waiter.join();
}

TEST(ServerProcessTest, EnvironmentFallbacksAndArgvWins) {
  {
    absl::StatusOr<ServerProcess> server = StartServerProcess({}, {{"KVINDEX_MAX_MATCH_TOKENS", "10"}});
    ASSERT_TRUE(server.ok()) << server.status();
    auto client = ClientFor(*server, absl::Seconds(5));
    EXPECT_EQ(client->Match(BigMatch(11)).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(client->Match(BigMatch(10)).ok());
  }
  {
    absl::StatusOr<ServerProcess> server =
        StartServerProcess({"--max_match_tokens=20"}, {{"KVINDEX_MAX_MATCH_TOKENS", "10"}});
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_TRUE(ClientFor(*server, absl::Seconds(5))->Match(BigMatch(11)).ok());
  }
}

TEST(ServerProcessTest, AibrixSyncSwitchIsHonouredAndKvindexEnvWins) {
  {
    absl::StatusOr<ServerProcess> server =
        StartServerProcess({}, {{"AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "false"}});
    ASSERT_TRUE(server.ok()) << server.status();
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks =
        ClientFor(*server, absl::Seconds(5))->SyncPods({UpsertPod("a")});
    ASSERT_TRUE(acks.ok()) << acks.status();
    EXPECT_EQ(acks->at(0).outcome(), v1::POD_OUTCOME_IGNORED);
    EXPECT_THAT(acks->at(0).reason(), HasSubstr("disabled"));
  }
  {
    absl::StatusOr<ServerProcess> server = StartServerProcess(
        {}, {{"AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "false"}, {"KVINDEX_KV_EVENT_SYNC", "true"}});
    ASSERT_TRUE(server.ok()) << server.status();
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks =
        ClientFor(*server, absl::Seconds(5))->SyncPods({UpsertPod("a")});
    ASSERT_TRUE(acks.ok()) << acks.status();
    EXPECT_EQ(acks->at(0).outcome(), v1::POD_OUTCOME_SUBSCRIBED);
  }
}

TEST(ServerProcessTest, PodsFileIsAppliedAtStart) {
  const std::string pods = WriteTempFile("pods.textproto", R"(
    pods {
      namespace: "default" name: "vllm-0" ip: "127.0.0.1" phase: "Running"
      labels { key: "model.aibrix.ai/name" value: "llama" }
      labels { key: "model.aibrix.ai/kv-events-enabled" value: "true" }
      events_port: 1 replay_port: 0
    }
    pods { namespace: "default" name: "pending" phase: "Pending" }
  )");
  absl::StatusOr<ServerProcess> server = StartServerProcess({"--pods_file=" + pods});
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<v1::ListPodsResponse> listed = ClientFor(*server, absl::Seconds(5))->ListPods();
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->pods_size(), 2);
  EXPECT_EQ(listed->pods(0).key(), "default/pending");
  EXPECT_FALSE(listed->pods(0).subscribed());
  EXPECT_EQ(listed->pods(1).key(), "default/vllm-0");
  EXPECT_EQ(listed->pods(1).model(), "llama");
  EXPECT_TRUE(listed->pods(1).subscribed());
}

TEST(ServerProcessTest, BadConfigurationExitsWithAMessage) {
  const std::string bad_pods = WriteTempFile("bad.textproto", "pods { nme: \"x\" }");
  const std::string empty_token = WriteTempFile("empty.token", "\n");
  struct Case {
    std::vector<std::string> args;
    std::vector<std::pair<std::string, std::string>> env;
    int exit_code;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--pods_file=" + bad_pods}, {}, 2, "nme"},
           {{"--pods_file=/nonexistent/pods"}, {}, 2, "/nonexistent/pods"},
           {{"--auth_token_file=/nonexistent/token"}, {}, 2, "/nonexistent/token"},
           {{"--auth_token_file=" + empty_token}, {}, 2, "empty"},
           {{"--auth_all_rpcs"}, {}, 2, "--auth_token_file"},
           {{"--tls_cert_file=/x.crt"}, {}, 1, "go together"},
           {{"--log_level=loud"}, {}, 2, "log_level"},
           {{}, {{"KVINDEX_MAX_PODS", "many"}}, 2, "KVINDEX_MAX_PODS"},
           {{"--listen=256.0.0.1:1"}, {}, 1, "cannot serve"},
       }) {
    std::vector<std::string> argv = {BinPath("kvindex-server"), "--metrics_listen="};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const CommandResult result = RunCommand(argv, absl::Seconds(20), c.env);
    EXPECT_EQ(result.exit_code, c.exit_code) << argv.back() << "\n" << result.err;
    EXPECT_THAT(result.err, HasSubstr(c.message)) << argv.back();
  }
}

TEST(ServerProcessTest, HelpDocumentsFlagsAndEnvironment) {
  const CommandResult result = RunCommand({BinPath("kvindex-server"), "--help"});
  EXPECT_EQ(result.exit_code, 1);  // absl's --help exits 1
  const std::string help = result.out + result.err;
  for (const char* flag : {"--listen", "--auth_token_file", "--auth_all_rpcs", "--tls_cert_file", "--tls_key_file",
                           "--tls_client_ca_file", "--pods_file", "--max_match_tokens", "--metrics_listen",
                           "--max_message_bytes", "--max_pods", "--subscriber_threads", "--max_blocks_per_worker",
                           "--max_index_entries", "--events_bind", "--kv_event_sync", "KVINDEX_<NAME IN CAPITALS>",
                           "AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED"}) {
    EXPECT_THAT(help, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace kvindex::testing
