// kvindex-server as a real process: SIGTERM/SIGINT with calls in flight, flags
// and their KVINDEX_* environment fallbacks, --pods_file, start-up errors.

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kvindex_client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"
#include "tests/testing/clients.h"
#include "tests/testing/pods.h"
#include "tests/testing/wait.h"

namespace kvindex::testing {
namespace {

using ::kvindex::testutil::Connect;
using ::kvindex::testutil::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

v1::MatchRequest BigMatch(size_t tokens) {
  v1::MatchRequest request;
  request.set_model("m");
  for (size_t i = 0; i < tokens; ++i) request.add_token_ids(static_cast<uint32_t>((i * 7919) % 200000));
  return request;
}

v1::PodUpdate UpsertPod(const std::string& name) {
  return testutil::Upsert(testutil::EnginePod("default", name, "m", 1, testutil::KvEventsSwitch::kLabel));
}

// A Match that the server holds in flight with the latch `name` of
// --testonly_match_latch_dir (server/match_latch.h), called on a thread of its own.
class HeldMatch {
 public:
  HeldMatch(v1::KvIndex::Stub* stub, const std::string& latch_dir, const std::string& name)
      : held_path_(absl::StrCat(latch_dir, "/", name, ".held")),
        release_path_(absl::StrCat(latch_dir, "/", name, ".release")) {
    context_.AddMetadata("kvindex-testonly-latch", name);
    context_.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    request_.set_model("m");
    request_.add_token_ids(1);
    thread_ = std::thread([this, stub] {
      status_ = stub->Match(&context_, request_, &response_);
      done_.Notify();
    });
  }
  ~HeldMatch() {
    context_.TryCancel();
    thread_.join();
  }

  // True once the server holds the call (it is in the server's hands).
  bool WaitUntilHeld(absl::Duration timeout) {
    return WaitFor([&] { return std::filesystem::exists(held_path_) || done_.HasBeenNotified(); }, timeout) &&
           !done_.HasBeenNotified();
  }
  void Release() { std::ofstream(release_path_).flush(); }
  // The call's status once it has ended; nullopt while it still runs after `timeout`.
  std::optional<grpc::Status> Wait(absl::Duration timeout) {
    if (!done_.WaitForNotificationWithTimeout(timeout)) return std::nullopt;
    return status_;
  }

 private:
  const std::string held_path_;
  const std::string release_path_;
  grpc::ClientContext context_;
  v1::MatchRequest request_;
  v1::MatchResponse response_;
  grpc::Status status_;
  absl::Notification done_;
  std::thread thread_;
};

grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(grpc::health::v1::Health::Stub* health,
                                                                 const std::string& service) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = health->Check(&context, request, &response);
  EXPECT_TRUE(status.ok()) << service << ": " << status.error_code() << " " << status.error_message();
  return status.ok() ? response.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
}

// README's stop contract, deterministically: two Matches are held in the
// server (test latches) when `signal` arrives. Then health says NOT_SERVING to
// an open Watch and to a new Check, a new call is refused with UNAVAILABLE, a
// held call let go within the drain time is answered, the other, held past
// it, is cancelled, and the process exits 0 within 5 s of the signal.
void ExpectGracefulStop(int signal) {
  using grpc::health::v1::HealthCheckResponse;
  const TempDirectory latches("latches");
  absl::StatusOr<ServerProcess> server = StartServerProcess({"--testonly_match_latch_dir=" + latches.path()});
  ASSERT_TRUE(server.ok()) << server.status();
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(server->address, grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::KvIndex::Stub> stub = v1::KvIndex::NewStub(channel);
  std::unique_ptr<grpc::health::v1::Health::Stub> health = grpc::health::v1::Health::NewStub(channel);

  grpc::ClientContext watch_context;
  watch_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> watch = health->Watch(&watch_context, {});
  HealthCheckResponse watched;
  ASSERT_TRUE(watch->Read(&watched));
  EXPECT_EQ(watched.status(), HealthCheckResponse::SERVING);

  HeldMatch answered(stub.get(), latches.path(), "answered");
  HeldMatch overstaying(stub.get(), latches.path(), "overstaying");
  ASSERT_TRUE(answered.WaitUntilHeld(absl::Seconds(20))) << server->process->Stderr();
  ASSERT_TRUE(overstaying.WaitUntilHeld(absl::Seconds(20))) << server->process->Stderr();

  const absl::Time signalled = absl::Now();
  ASSERT_TRUE(server->process->Signal(signal));

  // Health turns NOT_SERVING: the open Watch is told, and a new Check hears it
  // (the server still answers while calls are in flight).
  ASSERT_TRUE(watch->Read(&watched)) << server->process->Stderr();
  EXPECT_EQ(watched.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(CheckHealth(health.get(), ""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(CheckHealth(health.get(), "kvindex.v1.KvIndex"), HealthCheckResponse::NOT_SERVING);

  // A call started after the signal (NOT_SERVING was seen) is refused.
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::MatchResponse response;
    const grpc::Status refused = stub->Match(&context, BigMatch(10), &response);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
    EXPECT_EQ(refused.error_message(), "server is shutting down");
  }

  // An in-flight call let go within the drain time is answered.
  answered.Release();
  const std::optional<grpc::Status> answer = answered.Wait(absl::Seconds(20));
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(answer->ok()) << answer->error_code() << " " << answer->error_message();

  // One held past the drain time is cancelled by the server when that time is
  // up (its log says so: not earlier, by anything else). gRPC's code for a
  // call its server cancels is UNAVAILABLE.
  const std::optional<grpc::Status> cut = overstaying.Wait(absl::Seconds(20));
  ASSERT_TRUE(cut.has_value());
  EXPECT_EQ(cut->error_code(), grpc::StatusCode::UNAVAILABLE) << cut->error_message();

  // The server exits 0 within 5 s of the signal, ending the Watch stream.
  const std::optional<int> code = server->process->Wait(signalled + absl::Seconds(5) - absl::Now());
  EXPECT_EQ(code, 0) << server->process->Stderr();
  if (!code.has_value()) server->process->Signal(SIGKILL);
  EXPECT_FALSE(watch->Read(&watched));
  EXPECT_FALSE(watch->Finish().ok());
  const std::string log = server->process->Stderr();
  EXPECT_THAT(log, HasSubstr("test latch answered: Match let go (released)"));
  EXPECT_THAT(log, HasSubstr("calls still in flight at the shutdown deadline: cancelling them"));
  EXPECT_THAT(log, HasSubstr("test latch overstaying: Match let go (cancelled)"));
  EXPECT_THAT(log, HasSubstr("stopped"));
}

TEST(ServerProcessTest, SigtermRefusesNewCallsDrainsInFlightOnesAndExitsZero) { ExpectGracefulStop(SIGTERM); }

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
  const absl::Time signalled = absl::Now();
  ASSERT_TRUE(server->process->Signal(SIGTERM));
  const std::optional<int> code = server->process->Wait(signalled + absl::Seconds(5) - absl::Now());
  EXPECT_EQ(code, 0) << server->process->Stderr();
  if (!code.has_value()) server->process->Signal(SIGKILL);  // lets the waiter's Read end
  waiter.join();
}

TEST(ServerProcessTest, EnvironmentFallbacksAndArgvWins) {
  {
    absl::StatusOr<ServerProcess> server = StartServerProcess({}, {{"KVINDEX_MAX_MATCH_TOKENS", "10"}});
    ASSERT_TRUE(server.ok()) << server.status();
    auto client = Connect(server->address, absl::Seconds(5));
    EXPECT_EQ(client->Match(BigMatch(11)).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(client->Match(BigMatch(10)).ok());
  }
  {
    absl::StatusOr<ServerProcess> server =
        StartServerProcess({"--max_match_tokens=20"}, {{"KVINDEX_MAX_MATCH_TOKENS", "10"}});
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_TRUE(Connect(server->address, absl::Seconds(5))->Match(BigMatch(11)).ok());
  }
}

TEST(ServerProcessTest, AibrixSyncSwitchIsHonouredAndKvindexEnvWins) {
  {
    absl::StatusOr<ServerProcess> server =
        StartServerProcess({}, {{"AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "false"}});
    ASSERT_TRUE(server.ok()) << server.status();
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks =
        Connect(server->address, absl::Seconds(5))->SyncPods({UpsertPod("a")});
    ASSERT_TRUE(acks.ok()) << acks.status();
    EXPECT_EQ(acks->at(0).outcome(), v1::POD_OUTCOME_IGNORED);
    EXPECT_THAT(acks->at(0).reason(), HasSubstr("disabled"));
  }
  {
    absl::StatusOr<ServerProcess> server = StartServerProcess(
        {}, {{"AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "false"}, {"KVINDEX_KV_EVENT_SYNC", "true"}});
    ASSERT_TRUE(server.ok()) << server.status();
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks =
        Connect(server->address, absl::Seconds(5))->SyncPods({UpsertPod("a")});
    ASSERT_TRUE(acks.ok()) << acks.status();
    EXPECT_EQ(acks->at(0).outcome(), v1::POD_OUTCOME_SUBSCRIBED);
  }
}

// The log names the control plane's address when its stream closes too (gRPC
// says "unknown" by then).
TEST(ServerProcessTest, SyncPodsLogNamesThePeerWhenTheStreamCloses) {
  absl::StatusOr<ServerProcess> server = StartServerProcess({});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(Connect(server->address, absl::Seconds(5))->SyncPods({UpsertPod("a")}).ok());
  std::string closed;
  ASSERT_TRUE(WaitFor([&] {
    const std::string log = server->process->Stderr();
    const size_t at = log.find(" closed after 1 updates");
    if (at == std::string::npos) return false;
    closed = log.substr(log.rfind('\n', at) + 1, at - log.rfind('\n', at));
    return true;
  }));
  EXPECT_THAT(closed, HasSubstr("SyncPods stream from ipv4:127.0.0.1:"));
  EXPECT_THAT(closed, Not(HasSubstr("unknown")));
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
  absl::StatusOr<v1::ListPodsResponse> listed = Connect(server->address, absl::Seconds(5))->ListPods();
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
           {{"--tls_cert_file=/x.crt"}, {}, 2, "go together"},
           {{"--tls_client_ca_file=/ca.crt"}, {}, 2, "--tls_client_ca_file needs"},
           {{"--max_message_bytes=100"}, {}, 2, "--max_message_bytes"},
           // A valid configuration that cannot start: 1.
           {{"--tls_cert_file=/nonexistent/x.crt", "--tls_key_file=/nonexistent/x.key"}, {}, 1, "/nonexistent/x.crt"},
           {{"--log_level=loud"}, {}, 2, "log_level"},
           {{}, {{"KVINDEX_MAX_PODS", "many"}}, 2, "KVINDEX_MAX_PODS"},
           {{"--max_pods=abc"}, {}, 2, "--max_pods=abc"},
           {{"--max_pods", "-3"}, {}, 2, "--max_pods=-3"},
           {{"--no_such_flag=1"}, {}, 2, "unknown flag --no_such_flag"},
           {{"--listen"}, {}, 2, "--listen needs a value"},
           {{"--kv_event_sync=maybe"}, {}, 2, "--kv_event_sync=maybe"},
           {{"--models=llama-("}, {}, 2, "--models=llama-("},
           {{"--max_concurrent_replays=0"}, {}, 2, "--max_concurrent_replays must be at least 1"},
           {{"--listen=256.0.0.1:1"}, {}, 1, "cannot serve"},
       }) {
    std::vector<std::string> argv = {BinPath("kvindex-server"), "--metrics_listen="};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const CommandResult result = RunCommand(argv, absl::Seconds(20), c.env);
    EXPECT_EQ(result.exit_code, c.exit_code) << argv.back() << "\n" << result.err;
    EXPECT_THAT(result.err, HasSubstr(c.message)) << argv.back();
  }
}

// A port in use (here by another kvindex-server: gRPC's SO_REUSEPORT is off, so
// the second one does not share it) is a start that fails at run time: exit 1.
TEST(ServerProcessTest, BusyPortExitsOne) {
  absl::StatusOr<ServerProcess> first = StartServerProcess({});
  ASSERT_TRUE(first.ok()) << first.status();
  const CommandResult second =
      RunCommand({BinPath("kvindex-server"), "--metrics_listen=", "--listen=" + first->address}, absl::Seconds(20));
  EXPECT_EQ(second.exit_code, 1) << second.err;
  EXPECT_THAT(second.err, HasSubstr("cannot serve on " + first->address));
  const CommandResult metrics_busy = RunCommand(
      {BinPath("kvindex-server"), "--listen=127.0.0.1:0", "--metrics_listen=" + first->address}, absl::Seconds(20));
  EXPECT_EQ(metrics_busy.exit_code, 1) << metrics_busy.err;
}

// Port 0 picks the ports; one line on stdout says which, even with logging off.
TEST(ServerProcessTest, BoundAddressesArePrintedOnStdoutWhateverTheLogLevel) {
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(
      {BinPath("kvindex-server"), "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0", "--log_level=off"});
  ASSERT_TRUE(process.ok()) << process.status();
  ASSERT_TRUE(WaitFor([&] { return (*process)->Stdout().find('\n') != std::string::npos; }, absl::Seconds(20)))
      << (*process)->Stderr();
  const std::string line = (*process)->Stdout();
  std::smatch ports;
  ASSERT_TRUE(std::regex_match(line, ports,
                               std::regex("kvindex-server: grpc 127\\.0\\.0\\.1:([0-9]+), metrics "
                                          "http://127\\.0\\.0\\.1:([0-9]+)/metrics\n")))
      << line;
  EXPECT_NE(ports[1].str(), "0");
  EXPECT_NE(ports[2].str(), "0");
  EXPECT_EQ((*process)->Stderr(), "");
  absl::StatusOr<v1::GetStatsResponse> stats =
      Connect(absl::StrCat("127.0.0.1:", ports[1].str()), absl::Seconds(5))->GetStats();
  EXPECT_TRUE(stats.ok()) << stats.status();

  absl::StatusOr<std::unique_ptr<Subprocess>> no_metrics =
      Subprocess::Start({BinPath("kvindex-server"), "--listen=127.0.0.1:0", "--metrics_listen=", "--log_level=warn"});
  ASSERT_TRUE(no_metrics.ok()) << no_metrics.status();
  ASSERT_TRUE(WaitFor([&] { return (*no_metrics)->Stdout().find('\n') != std::string::npos; }, absl::Seconds(20)));
  EXPECT_TRUE(std::regex_match((*no_metrics)->Stdout(),
                               std::regex("kvindex-server: grpc 127\\.0\\.0\\.1:[1-9][0-9]*, metrics off\n")))
      << (*no_metrics)->Stdout();
}

TEST(ServerProcessTest, HelpListsItsOwnFlagsOnceAndExitsZero) {
  const CommandResult result = RunCommand({BinPath("kvindex-server"), "--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.err, "");
  const std::string& help = result.out;
  EXPECT_THAT(help, ::testing::StartsWith("kvindex-server: prefix-cache index"));
  EXPECT_THAT(help, Not(HasSubstr("kvindex-server: kvindex-server")));
  EXPECT_THAT(help, Not(HasSubstr("main.cc")));  // no build path
  EXPECT_THAT(help, Not(HasSubstr("--flagfile")));  // absl's own flags are not the tool's
  for (const char* flag : {"--listen", "--auth_token_file", "--auth_all_rpcs", "--tls_cert_file", "--tls_key_file",
                           "--tls_client_ca_file", "--pods_file", "--max_match_tokens", "--metrics_listen",
                           "--max_message_bytes", "--max_pods", "--max_workers", "--max_concurrent_replays", "--subscriber_threads",
                           "--max_blocks_per_worker", "--max_index_entries", "--index_memory_mb", "--events_bind",
                           "--kv_event_sync", "--log_level"}) {
    const std::string entry = absl::StrCat("\n  ", flag, "=");
    const size_t at = help.find(entry);
    EXPECT_NE(at, std::string::npos) << flag;
    EXPECT_EQ(help.find(entry, at + 1), std::string::npos) << flag << " listed twice";
  }
  for (const char* text : {"KVINDEX_<NAME IN CAPITALS>", "AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "second chance",
                           "leaves first"}) {
    EXPECT_THAT(help, HasSubstr(text));
  }
  EXPECT_THAT(help, Not(HasSubstr("least recently stored")));
  EXPECT_EQ(RunCommand({BinPath("kvindex-server"), "--helpfull"}).exit_code, 0);
}

}  // namespace
}  // namespace kvindex::testing
