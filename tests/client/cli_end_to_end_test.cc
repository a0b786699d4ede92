// End to end with real processes: kvindex-server, a fake vLLM engine
// publishing KV events over ZeroMQ, and the kvindex CLI. Apply a pod, publish
// events, `kvindex match` names the pod with the right matched tokens; delete
// the pod, the match is gone.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/ingest/fake_engine.h"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"

namespace kvindex::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::EndsWith;
using ::testing::Not;
using ::testing::StartsWith;

constexpr uint32_t kBlockSize = 16;
constexpr uint32_t kBlocks = 5;

class CliEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create({});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    absl::StatusOr<ServerProcess> server = StartServerProcess({"--auth_token_file=" + TokenFile()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  static std::string TokenFile() { return WriteTempFile("token", "e2e-token\n"); }

  // `kvindex ARGS... --server ADDR --token T`.
  CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), BinPath("kvindex"));
    args.insert(args.end(), {"--server", server_.address, "--token", "e2e-token", "--timeout", "10"});
    return RunCommand(args);
  }

  std::string Snapshot() const {
    return absl::StrCat(R"(
      pods {
        namespace: "default" name: "vllm-0" ip: "127.0.0.1" phase: "Running"
        labels { key: "model.aibrix.ai/name" value: "llama-3-8b" }
        labels { key: "model.aibrix.ai/kv-events-enabled" value: "true" }
        events_port: )", engine_->events_port(), " replay_port: ", engine_->replay_port(), R"(
      }
      pods { namespace: "default" name: "not-ready" ip: "127.0.0.1" phase: "Pending"
             labels { key: "model.aibrix.ai/name" value: "llama-3-8b" } })");
  }

  std::string PromptTokenList(uint32_t extra_tokens) const {
    std::vector<uint32_t> tokens = PromptTokens(kBlocks, kBlockSize);
    for (uint32_t i = 0; i < extra_tokens; ++i) tokens.push_back(7);
    return absl::StrJoin(tokens, ",");
  }

  // `kvindex match --json` on the canonical prompt, parsed.
  nlohmann::json MatchJson() {
    const CommandResult result =
        Cli({"match", "--model", "llama-3-8b", "--tokens", PromptTokenList(3), "--json"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
  }

  std::unique_ptr<FakeEngine> engine_;
  ServerProcess server_;
};

TEST_F(CliEndToEndTest, ApplyPublishMatchDelete) {
  // Apply a snapshot: the engine pod is subscribed, the pending one ignored.
  const std::string snapshot = WriteTempFile("snapshot.textproto", Snapshot());
  CommandResult applied = Cli({"pods", "apply", "-f", snapshot});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  EXPECT_THAT(applied.out, HasSubstr("default/vllm-0"));
  EXPECT_THAT(applied.out, HasSubstr("subscribed"));
  EXPECT_THAT(applied.out, HasSubstr("default/not-ready"));
  EXPECT_THAT(applied.out, HasSubstr("ignored"));
  // The last line sums up, saying why the ignored pod is not followed.
  EXPECT_THAT(applied.out, EndsWith("summary: 1 subscribed, 0 updated, 1 ignored (kv events not enabled (label "
                                    "model.aibrix.ai/kv-events-enabled is not \"true\"): 1), 0 rejected\n"));
  ASSERT_TRUE(engine_->WaitForSubscribers(1, absl::Seconds(20)));

  // The engine stores the prompt's blocks, one event per block, chained.
  for (uint32_t k = 0; k < kBlocks; ++k) engine_->Publish(ChainBlockPayload(k, kBlockSize));
  nlohmann::json match;
  ASSERT_TRUE(WaitFor(
      [&] {
        match = MatchJson();
        return match.is_object() && match["pods"].size() == 1 &&
               match["pods"][0]["matched_blocks"] == kBlocks;
      },
      absl::Seconds(20)))
      << match.dump();
  EXPECT_EQ(match["block_size"], kBlockSize);
  EXPECT_EQ(match["query_blocks"], kBlocks);  // 3 extra tokens are no full block
  EXPECT_EQ(match["pods"][0]["pod"], "default/vllm-0");
  EXPECT_EQ(match["pods"][0]["dp_rank"], 0);
  EXPECT_EQ(match["pods"][0]["matched_tokens"], kBlocks * kBlockSize);
  EXPECT_EQ(match["pods"][0]["blocks_by_medium"]["GPU"], kBlocks);

  // The human table says the same.
  const CommandResult table = Cli({"match", "--model", "llama-3-8b", "--tokens", PromptTokenList(0)});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("MATCHED_TOKENS"));
  EXPECT_THAT(table.out, HasSubstr("default/vllm-0"));
  EXPECT_THAT(table.out, HasSubstr(absl::StrCat("  ", kBlocks * kBlockSize, "  ")));

  // --weight, --pods and --lora reach the server (tests/client/cli_args_test.cc covers them in depth).
  const CommandResult weighted = Cli({"match", "--model", "llama-3-8b", "--tokens", PromptTokenList(0), "--weight",
                                      "GPU=0.5,CPU=2", "--pods", "default/vllm-0,default/other", "--json"});
  ASSERT_EQ(weighted.exit_code, 0) << weighted.err;
  const nlohmann::json weighted_json = nlohmann::json::parse(weighted.out);
  ASSERT_EQ(weighted_json["pods"].size(), 1u) << weighted.out;
  EXPECT_EQ(weighted_json["pods"][0]["score"], 0.5 * kBlocks);
  const CommandResult elsewhere =
      Cli({"match", "--model", "llama-3-8b", "--tokens", PromptTokenList(0), "--pods", "default/other"});
  ASSERT_EQ(elsewhere.exit_code, 0) << elsewhere.err;
  EXPECT_THAT(elsewhere.out, HasSubstr("0 pods match"));
  const CommandResult adapter =
      Cli({"match", "--model", "llama-3-8b", "--lora", "sql-adapter", "--tokens", PromptTokenList(0)});
  ASSERT_EQ(adapter.exit_code, 0) << adapter.err;
  EXPECT_THAT(adapter.out, HasSubstr("model llama-3-8b (lora sql-adapter)"));
  EXPECT_THAT(adapter.out, HasSubstr("0 pods match")) << "the engine's blocks are the base model's";

  // A prompt that shares only the first two blocks matches two blocks.
  std::vector<uint32_t> diverging = PromptTokens(kBlocks, kBlockSize);
  diverging[2 * kBlockSize] = 999999;
  const std::string tokens_file = WriteTempFile("tokens.json", absl::StrCat("[", absl::StrJoin(diverging, ", "), "]"));
  const CommandResult partial = Cli({"match", "--model", "llama-3-8b", "--tokens-file", tokens_file, "--json"});
  ASSERT_EQ(partial.exit_code, 0) << partial.err;
  EXPECT_EQ(nlohmann::json::parse(partial.out)["pods"][0]["matched_tokens"], 2 * kBlockSize);

  // pods list and stats show the live subscription.
  const CommandResult listed = Cli({"pods", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_THAT(listed.out, HasSubstr("default/vllm-0"));
  EXPECT_THAT(listed.out, HasSubstr("live"));
  EXPECT_THAT(listed.out, HasSubstr("not-ready"));
  const CommandResult listed_json = Cli({"pods", "list", "--json"});
  ASSERT_EQ(listed_json.exit_code, 0) << listed_json.err;
  const nlohmann::json pods = nlohmann::json::parse(listed_json.out);
  ASSERT_EQ(pods["pods"].size(), 2u);
  EXPECT_EQ(pods["pods"][1]["key"], "default/vllm-0");
  EXPECT_EQ(pods["pods"][1]["workers"][0]["blocks"], std::to_string(kBlocks));  // uint64 is a JSON string
  const CommandResult stats = Cli({"stats", "--json"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  const nlohmann::json totals = nlohmann::json::parse(stats.out);
  EXPECT_EQ(totals["pods"], "2");
  EXPECT_EQ(totals["subscribed_pods"], "1");
  EXPECT_EQ(totals["events"], std::to_string(kBlocks));

  // Delete the pod: its blocks go with it.
  const CommandResult deleted = Cli({"pods", "delete", "default/vllm-0"});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.out << deleted.err;
  EXPECT_THAT(deleted.out, HasSubstr("removed"));
  nlohmann::json after;
  ASSERT_TRUE(WaitFor(
      [&] {
        after = MatchJson();
        return after.is_object() && after["pods"].empty();
      },
      absl::Seconds(10)))
      << after.dump();
  const CommandResult gone = Cli({"match", "--model", "llama-3-8b", "--tokens", PromptTokenList(0)});
  EXPECT_THAT(gone.out, HasSubstr("0 pods match"));
  EXPECT_THAT(gone.out, Not(HasSubstr("default/vllm-0")));
}

TEST_F(CliEndToEndTest, ErrorsAndUsage) {
  // Server-side errors come back as the gRPC code, exit 1.
  CommandResult result = Cli({"match", "--model", "m", "--hashes", "1,0x2"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  result = RunCommand({BinPath("kvindex"), "pods", "delete", "default/x", "--server", server_.address});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("UNAUTHENTICATED"));
  result = RunCommand({BinPath("kvindex"), "pods", "list", "--server", server_.address, "--token", "wrong"});
  EXPECT_EQ(result.exit_code, 0) << "ListPods needs no token without --auth_all_rpcs: " << result.err;

  // A rejected pod makes `pods apply` exit 1 and say why.
  const std::string bad = WriteTempFile("bad.textproto", R"(pods { namespace: "d" name: "p" ip: "not-an-ip" })");
  result = Cli({"pods", "apply", "-f", bad});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.out, HasSubstr("rejected"));

  // Usage errors exit 2 before calling anyone.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"match", "--tokens", "1,2"},
           {"match", "--model", "m"},
           {"match", "--model", "m", "--tokens", "1", "--hashes", "2"},
           {"match", "--model", "m", "--tokens", "1,x"},
           {"match", "--model", "m", "--tokens", "1", "--bogus"},
           {"pods"},
           {"pods", "apply"},
           {"pods", "delete"},
           {"pods", "frobnicate"},
           {"stats", "extra"},
       }) {
    result = Cli(args);
    EXPECT_EQ(result.exit_code, 2) << absl::StrJoin(args, " ") << "\n" << result.err;
    EXPECT_THAT(result.err, HasSubstr("usage: kvindex")) << absl::StrJoin(args, " ");
  }
  const std::string garbage = WriteTempFile("garbage.textproto", "pods { nonsense");
  result = Cli({"pods", "apply", "-f", garbage});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.err, HasSubstr("PodSnapshot"));
  // So are bad flag values and files named on the command line that cannot be
  // read, whatever the subcommand.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"stats", "--timeout", "abc"},
           {"stats", "--timeout", "0"},
           {"stats", "--timeout=-1"},
           {"pods", "list", "--timeout", "-1"},
           {"pods", "apply", "-f", "/nonexistent/pods.textproto"},
           {"match", "--model", "m", "--tokens-file", "/nonexistent/tokens"},
           {"stats", "--token-file", "/nonexistent/token"},
       }) {
    std::vector<std::string> argv = {BinPath("kvindex")};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--server", server_.address});
    result = RunCommand(argv);
    EXPECT_EQ(result.exit_code, 2) << absl::StrJoin(args, " ") << "\n" << result.err;
    EXPECT_THAT(result.err, StartsWith("kvindex ")) << absl::StrJoin(args, " ");
  }

  // A server that is not there is UNAVAILABLE, exit 1.
  result = RunCommand({BinPath("kvindex"), "stats", "--server", "127.0.0.1:1", "--timeout", "2"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("UNAVAILABLE"));
}


// KVINDEX_SERVER and KVINDEX_TOKEN stand in for --server and --token; the
// flags (and --token-file) win over them.
TEST_F(CliEndToEndTest, ServerAndTokenFromTheEnvironment) {
  const std::string kvindex = BinPath("kvindex");
  const std::vector<std::pair<std::string, std::string>> env = {{"KVINDEX_SERVER", server_.address},
                                                                {"KVINDEX_TOKEN", "e2e-token"}};
  // SyncPods needs the token: KVINDEX_TOKEN is sent, to KVINDEX_SERVER.
  const std::string snapshot = WriteTempFile("env-snapshot.textproto", Snapshot());
  CommandResult result = RunCommand({kvindex, "pods", "apply", "-f", snapshot, "--timeout", "10"}, absl::Seconds(60), env);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("default/vllm-0"));
  result = RunCommand({kvindex, "stats", "--json", "--timeout", "10"}, absl::Seconds(60), env);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(nlohmann::json::parse(result.out)["pods"], "2");

  // A wrong KVINDEX_TOKEN is refused; --token, then --token-file, win over it.
  const std::vector<std::pair<std::string, std::string>> wrong = {{"KVINDEX_SERVER", server_.address},
                                                                  {"KVINDEX_TOKEN", "wrong"}};
  result = RunCommand({kvindex, "pods", "delete", "default/not-ready", "--timeout", "10"}, absl::Seconds(60), wrong);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("UNAUTHENTICATED"));
  result = RunCommand({kvindex, "pods", "delete", "default/not-ready", "--token", "e2e-token", "--timeout", "10"},
                      absl::Seconds(60), wrong);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("removed"));
  result = RunCommand({kvindex, "pods", "delete", "default/vllm-0", "--token-file", TokenFile(), "--timeout", "10"},
                      absl::Seconds(60), wrong);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("removed"));

  // KVINDEX_SERVER is where the CLI goes; --server wins over it.
  const std::vector<std::pair<std::string, std::string>> nowhere = {{"KVINDEX_SERVER", "127.0.0.1:1"}};
  result = RunCommand({kvindex, "stats", "--timeout", "2"}, absl::Seconds(60), nowhere);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("UNAVAILABLE"));
  result = RunCommand({kvindex, "stats", "--json", "--server", server_.address, "--timeout", "10"}, absl::Seconds(60),
                      nowhere);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(nlohmann::json::parse(result.out)["pods"], "0");
}

// kvindex-server's caps on pods and Match size, one from the environment
// (KVINDEX_MAX_PODS) and one from a flag, as the CLI sees them.
TEST(CliServerLimitsTest, MaxPodsAndMaxMatchTokens) {
  absl::StatusOr<ServerProcess> server =
      StartServerProcess({"--max_match_tokens=8", "--kv_event_sync=false"}, {{"KVINDEX_MAX_PODS", "2"}});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string kvindex = BinPath("kvindex");
  const std::string three = WriteTempFile("three.textproto", R"(
      pods { namespace: "default" name: "p0" ip: "127.0.0.1" phase: "Running" }
      pods { namespace: "default" name: "p1" ip: "127.0.0.1" phase: "Running" }
      pods { namespace: "default" name: "p2" ip: "127.0.0.1" phase: "Running" })");
  CommandResult result =
      RunCommand({kvindex, "pods", "apply", "-f", three, "--json", "--server", server->address, "--timeout", "10"});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  const nlohmann::json ack = nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(ack.is_object()) << result.out;
  ASSERT_EQ(ack["pods"].size(), 3u) << result.out;
  int rejected = 0;
  for (const nlohmann::json& pod : ack["pods"]) {
    if (pod["outcome"] != "POD_OUTCOME_REJECTED") continue;
    ++rejected;
    EXPECT_EQ(pod["reason"], "too many pods (limit 2)") << result.out;
  }
  EXPECT_EQ(rejected, 1) << result.out;
  result = RunCommand({kvindex, "stats", "--json", "--server", server->address, "--timeout", "10"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(nlohmann::json::parse(result.out)["pods"], "2");

  result = RunCommand({kvindex, "match", "--model", "m", "--tokens", "1,2,3,4,5,6,7,8,9", "--server", server->address,
                       "--timeout", "10"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(result.err, HasSubstr("Match carries 9 token_ids; the limit is 8 (--max_match_tokens)"));
  result = RunCommand({kvindex, "match", "--model", "m", "--hashes", "1,2,3,4,5,6,7,8,9", "--server",
                       server->address, "--timeout", "10"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("Match carries 9 block_hashes; the limit is 8 (--max_match_tokens)"));
  result = RunCommand({kvindex, "match", "--model", "m", "--tokens", "1,2,3,4,5,6,7,8", "--server", server->address,
                       "--timeout", "10"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
}

// The port the process logged after `marker` (e.g. "bind endpoint tcp://127.0.0.1:"); 0 when none.
int LoggedPort(const ServerProcess& server, std::string_view marker) {
  int port = 0;
  WaitFor([&] {
    const std::string log = server.process->Stderr();
    const size_t at = log.find(marker);
    if (at == std::string::npos) return false;
    const size_t start = at + marker.size();
    size_t end = start;
    while (end < log.size() && log[end] >= '0' && log[end] <= '9') ++end;
    return absl::SimpleAtoi(log.substr(start, end - start), &port);
  });
  return port;
}

// --events_bind: engines connect to kvindex, and messages are routed by topic
// kv@<ip>:<port>@<model> to the pod and rank. The pod sits at the documented
// limits, a 253-byte name and dp_size 1024 (its last rank on port 65535),
// and its last rank's blocks are matched; one byte or one rank more is rejected.
TEST(CliServerLimitsTest, EventsBindServesAPodAtTheLimits) {
  absl::StatusOr<ServerProcess> server =
      StartServerProcess({"--events_bind=tcp://127.0.0.1:*", "--auth_token_file=" + WriteTempFile("token", "t\n")});
  ASSERT_TRUE(server.ok()) << server.status();
  const int bind_port = LoggedPort(*server, "kv events bind endpoint tcp://127.0.0.1:");
  ASSERT_GT(bind_port, 0) << server->process->Stderr();
  const std::string kvindex = BinPath("kvindex");
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), kvindex);
    args.insert(args.end(), {"--server", server->address, "--token", "t", "--timeout", "10"});
    return RunCommand(args);
  };
  const std::string name(253, 'n');
  auto pod = [](const std::string& name, uint32_t events_port, uint32_t dp_size) {
    return absl::StrCat(R"(pods { namespace: "default" name: ")", name, R"(" ip: "127.0.0.1" phase: "Running"
        labels { key: "model.aibrix.ai/name" value: "llama-3-8b" }
        labels { key: "model.aibrix.ai/kv-events-enabled" value: "true" }
        events_port: )", events_port, " replay_port: 0 dp_size: ", dp_size, " engine_connects: true }\n");
  };

  // One byte, one rank, one port too many: each rejected with its reason.
  const std::string over = WriteTempFile(
      "over.textproto", absl::StrCat(pod(std::string(254, 'n'), 64512, 1), pod("wide", 64512, 1025),
                                     pod("high", 64513, 1024)));
  CommandResult result = cli({"pods", "apply", "-f", over});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.out, HasSubstr("name: 254 bytes, limit 253"));
  EXPECT_THAT(result.out, HasSubstr("dp_size: 1025 exceeds 1024"));
  EXPECT_THAT(result.out, HasSubstr("events_port: 64513 + dp_size 1024 - 1 exceeds 65535"));

  // At the limits: subscribed, 1024 workers.
  const std::string at = WriteTempFile("at.textproto", pod(name, 64512, 1024));
  result = cli({"pods", "apply", "-f", at});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("subscribed"));
  result = cli({"pods", "list", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json pods = nlohmann::json::parse(result.out);
  ASSERT_EQ(pods["pods"].size(), 1u);
  EXPECT_EQ(pods["pods"][0]["key"], "default/" + name);
  EXPECT_EQ(pods["pods"][0]["workers"].size(), 1024u);

  // The engine of rank 1023 connects to kvindex and publishes under its topic.
  FakeEngineOptions options;
  options.connect_to = absl::StrCat("tcp://127.0.0.1:", bind_port);
  options.replay = false;
  options.topic = "kv@127.0.0.1:65535@llama-3-8b";
  absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_TRUE((*engine)->WaitForSubscribers(1, absl::Seconds(20)));
  const std::string tokens = absl::StrJoin(PromptTokens(kBlocks, kBlockSize), ",");
  nlohmann::json match;
  // A connection's first messages may arrive before the route is in place
  // (dropped as an unknown sender), so the chain is published until it is matched.
  ASSERT_TRUE(WaitFor(
      [&] {
        for (uint32_t k = 0; k < kBlocks; ++k) (*engine)->Publish(ChainBlockPayload(k, kBlockSize));
        const CommandResult m = cli({"match", "--model", "llama-3-8b", "--tokens", tokens, "--json"});
        match = nlohmann::json::parse(m.out, nullptr, /*allow_exceptions=*/false);
        return match.is_object() && match["pods"].size() == 1 && match["pods"][0]["matched_blocks"] == kBlocks;
      },
      absl::Seconds(30)))
      << match.dump();
  EXPECT_EQ(match["pods"][0]["pod"], "default/" + name);
  EXPECT_EQ(match["pods"][0]["dp_rank"], 1023);
  EXPECT_EQ(match["pods"][0]["matched_tokens"], kBlocks * kBlockSize);

  // GetStats counts the routed messages, and a topic naming no known pod as unrouted.
  options.topic = "kv@10.9.9.9:5557@llama-3-8b";
  absl::StatusOr<std::unique_ptr<FakeEngine>> stranger = FakeEngine::Create(options);
  ASSERT_TRUE(stranger.ok()) << stranger.status();
  ASSERT_TRUE((*stranger)->WaitForSubscribers(1, absl::Seconds(20)));
  auto stat = [](const nlohmann::json& stats, const char* field) {  // uint64 is a JSON string
    return stats.contains(field) ? std::stoull(stats[field].get<std::string>()) : 0;
  };
  nlohmann::json stats;
  ASSERT_TRUE(WaitFor(
      [&] {
        (*stranger)->Publish(ChainBlockPayload(0, kBlockSize));
        stats = nlohmann::json::parse(cli({"stats", "--json"}).out, nullptr, /*allow_exceptions=*/false);
        return stats.is_object() && stat(stats, "bind_unrouted") >= 1;
      },
      absl::Seconds(30)))
      << stats.dump();
  EXPECT_GE(stat(stats, "bind_messages"), kBlocks);
  EXPECT_EQ(stat(stats, "bind_bad_frames"), 0u);
}

// --subscriber_threads: the subscriptions run on that many I/O threads (the
// manager says so at start, from the flag or KVINDEX_SUBSCRIBER_THREADS), every
// pod is served whichever thread it lands on, and 0 is a usage error.
// (The count is logged before --pods_file is applied: "0 pods subscribed".)
TEST(CliServerLimitsTest, SubscriberThreads) {
  std::vector<std::unique_ptr<FakeEngine>> engines;
  std::string snapshot;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create({});
    ASSERT_TRUE(engine.ok()) << engine.status();
    absl::StrAppend(&snapshot, R"(pods { namespace: "default" name: "vllm-)", i, R"(" ip: "127.0.0.1" phase: "Running"
        labels { key: "model.aibrix.ai/name" value: "llama-3-8b" }
        labels { key: "model.aibrix.ai/kv-events-enabled" value: "true" }
        events_port: )", (*engine)->events_port(), " replay_port: ", (*engine)->replay_port(), " }\n");
    engines.push_back(*std::move(engine));
  }
  const std::string pods_file = WriteTempFile("three-engines.textproto", snapshot);
  absl::StatusOr<ServerProcess> server = StartServerProcess({"--subscriber_threads=3", "--pods_file=" + pods_file});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT(server->process->Stderr(), HasSubstr("subscription manager started: 0 pods subscribed, 3 I/O threads"));
  for (const auto& engine : engines) ASSERT_TRUE(engine->WaitForSubscribers(1, absl::Seconds(20)));
  // Engine i holds the first i + 1 blocks of the prompt.
  for (uint32_t i = 0; i < engines.size(); ++i) {
    for (uint32_t k = 0; k <= i; ++k) engines[i]->Publish(ChainBlockPayload(k, kBlockSize));
  }
  const std::string tokens = absl::StrJoin(PromptTokens(3, kBlockSize), ",");
  nlohmann::json match;
  ASSERT_TRUE(WaitFor(
      [&] {
        const CommandResult m = RunCommand({BinPath("kvindex"), "match", "--model", "llama-3-8b", "--tokens", tokens,
                                            "--json", "--server", server->address, "--timeout", "10"});
        match = nlohmann::json::parse(m.out, nullptr, /*allow_exceptions=*/false);
        return match.is_object() && match["pods"].size() == 3 && match["pods"][0]["matched_blocks"] == 3 &&
               match["pods"][1]["matched_blocks"] == 2 && match["pods"][2]["matched_blocks"] == 1;
      },
      absl::Seconds(30)))
      << match.dump();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(match["pods"][i]["pod"], absl::StrCat("default/vllm-", 2 - i));

  absl::StatusOr<ServerProcess> one = StartServerProcess({}, {{"KVINDEX_SUBSCRIBER_THREADS", "1"}});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_THAT(one->process->Stderr(), HasSubstr("subscription manager started: 0 pods subscribed, 1 I/O threads"));

  const CommandResult zero =
      RunCommand({BinPath("kvindex-server"), "--listen=127.0.0.1:0", "--metrics_listen=", "--subscriber_threads=0"},
                 absl::Seconds(30));
  EXPECT_EQ(zero.exit_code, 2) << zero.err;
  EXPECT_THAT(zero.err, HasSubstr("--subscriber_threads must be at least 1"));
}

}  // namespace
}  // namespace kvindex::testing
