// `kvindex route` (client/route_command.cc) against a real kvindex-server
// process: what it prints when RecordRouting succeeds (by tokens, by hashes,
// the TTL applied, --ttl-ms, --rank, --json) and that `kvindex match` then
// sees the prompt as SPECULATIVE; a pod or rank the server does not know
// exits 1 with the gRPC code on stderr; a usage error exits 2 before any call.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"
#include "tests/testing/dead_port.h"

namespace kvindex::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// 40 tokens: two full 16-token blocks (--default_block_size) and 8 tokens over.
const char kPrompt[] = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,"
                       "35,36,37,38,39,40";

class RouteCommandTest : public ::testing::Test {
 protected:
  // Two pods serving "m": "followed" (KV events on, two dp ranks; its events
  // port refuses connections, which leaves it subscribed) and "silent" (KV
  // events off: hints are all kvindex knows of it).
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testutil::DeadPort>> dead = testutil::DeadPort::Bind();
    ASSERT_TRUE(dead.ok()) << dead.status();
    dead_port_ = *std::move(dead);
    const std::string pods = WriteTempFile("route-pods.textproto", absl::StrCat(R"(
        pods { namespace: "default" name: "followed" ip: "127.0.0.1" phase: "Running" model: "m"
               kv_events_enabled: true events_port: )", dead_port_->port(), R"( replay_port: 0 dp_size: 2 }
        pods { namespace: "default" name: "silent" ip: "127.0.0.1" phase: "Running" model: "m"
               kv_events_enabled: false })"));
    absl::StatusOr<ServerProcess> server =
        StartServerProcess({"--pods_file=" + pods, "--auth_token_file=" + WriteTempFile("route-token", "t\n")});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // `kvindex ARGS... --server ADDR --token t --timeout 10`.
  CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), BinPath("kvindex"));
    args.insert(args.end(), {"--server", server_.address, "--token", "t", "--timeout", "10"});
    return RunCommand(args);
  }

  // `kvindex match --json` of `prompt` ("--tokens" or "--hashes"), parsed.
  nlohmann::json MatchJson(const std::string& flag, const std::string& prompt) {
    const CommandResult result = Cli({"match", "--model", "m", flag, prompt, "--json"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
  }

  std::unique_ptr<testutil::DeadPort> dead_port_;
  ServerProcess server_;
};

TEST_F(RouteCommandTest, PrintsTheEntriesAndTheTtlAndMatchSeesThemSpeculative) {
  // A subscribed pod: the server's adaptive TTL, --speculative_ttl (2 s) before any confirmation.
  CommandResult result = Cli({"route", "--model", "m", "--tokens", kPrompt, "--pod", "default/followed"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "default/followed rank 0: 2 speculative entries, TTL 2000 ms\n");
  EXPECT_EQ(result.err, "");

  // --ttl-ms and --rank reach the server.
  result = Cli({"route", "--model", "m", "--tokens", kPrompt, "--pod", "default/followed", "--rank", "1", "--ttl-ms",
                "600000"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "default/followed rank 1: 2 speculative entries, TTL 600000 ms\n");

  // A pod without KV events: no TTL; --json prints the response.
  result = Cli({"route", "--model", "m", "--tokens", kPrompt, "--pod", "default/silent", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json response = nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(response.is_object()) << result.out;
  EXPECT_EQ(response["blocks"], 2);
  EXPECT_EQ(response["ttl_ms"], 0);
  result = Cli({"route", "--model", "m", "--tokens", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "--pod",
                "default/silent"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "default/silent rank 0: 1 speculative entry, no TTL (kept until evicted)\n")
      << "refreshed, and singular";

  // By index hashes, as a gateway may send them.
  result = Cli({"route", "--model", "m", "--hashes", "0x1f,0x2e,0x3d", "--pod", "default/silent", "--ttl-ms", "600000"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "default/silent rank 0: 3 speculative entries, TTL 600000 ms\n");

  // `kvindex match` sees the hints as the tier SPECULATIVE: the silent pod and
  // rank 1 of the followed one (its 600 s TTL) at least; rank 0's 2 s may have passed.
  const nlohmann::json by_tokens = MatchJson("--tokens", kPrompt);
  ASSERT_TRUE(by_tokens.is_object());
  ASSERT_GE(by_tokens["pods"].size(), 2u) << by_tokens.dump();
  for (const nlohmann::json& pod : by_tokens["pods"]) {
    EXPECT_EQ(pod["matched_blocks"], 2) << pod.dump();
    EXPECT_EQ(pod["blocks_by_medium"], nlohmann::json({{"SPECULATIVE", 2}})) << pod.dump();
  }
  const nlohmann::json by_hashes = MatchJson("--hashes", "0x1f,0x2e,0x3d,0x4c");
  ASSERT_TRUE(by_hashes.is_object());
  ASSERT_EQ(by_hashes["pods"].size(), 1u) << by_hashes.dump();
  EXPECT_EQ(by_hashes["pods"][0]["pod"], "default/silent");
  EXPECT_EQ(by_hashes["pods"][0]["matched_blocks"], 3);
  EXPECT_EQ(by_hashes["pods"][0]["blocks_by_medium"], nlohmann::json({{"SPECULATIVE", 3}}));
}

TEST_F(RouteCommandTest, UnknownPodOrRankExitsOneWithTheGrpcCode) {
  CommandResult result = Cli({"route", "--model", "m", "--tokens", kPrompt, "--pod", "default/nobody"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.out, "");
  EXPECT_EQ(result.err, "kvindex route: NOT_FOUND: no pod \"default/nobody\" is known\n");
  result = Cli({"route", "--model", "m", "--tokens", kPrompt, "--pod", "default/followed", "--rank", "2"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err, "kvindex route: NOT_FOUND: pod \"default/followed\" has no dp rank 2 (dp_size 2)\n");
  // Nothing was recorded by the refused calls.
  const nlohmann::json match = MatchJson("--tokens", kPrompt);
  ASSERT_TRUE(match.is_object());
  EXPECT_TRUE(match["pods"].empty()) << match.dump();
}

TEST_F(RouteCommandTest, UsageErrorsExitTwoBeforeAnyCall) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--model", "m", "--tokens", "1,2"},                                     // no --pod
           {"--model", "m", "--tokens", "1,2", "--pod", ""},                        // empty --pod
           {"--tokens", "1,2", "--pod", "default/silent"},                          // no --model
           {"--model", "m", "--pod", "default/silent"},                             // no prompt
           {"--model", "m", "--tokens", "1,2", "--hashes", "0x1", "--pod", "default/silent"},  // both
           {"--model", "m", "--tokens", "1,2", "--tokens-file", "/dev/null", "--pod", "default/silent"},
           {"--model", "m", "--tokens", "1,x", "--pod", "default/silent"},
           {"--model", "m", "--hashes", "0xZZ", "--pod", "default/silent"},
           {"--model", "m", "--tokens", "1,2", "--pod", "default/silent", "--rank", "abc"},
           {"--model", "m", "--tokens", "1,2", "--pod", "default/silent", "--rank", "-1"},
           {"--model", "m", "--tokens", "1,2", "--pod", "default/silent", "--ttl-ms", "-5"},
           {"--model", "m", "--tokens", "1,2", "--pod", "default/silent", "--ttl-ms", "1.5"},
           {"--model", "m", "--tokens", "1,2", "--pod", "default/silent", "--ttl-ms", "4294967296"},  // over uint32
           {"--model", "m", "--tokens", "1,2", "--pod", "default/silent", "extra"},
           {"--model", "m", "--tokens", "1,2", "--pod", "default/silent", "--bogus"},
       }) {
    args.insert(args.begin(), "route");
    const CommandResult result = Cli(args);
    EXPECT_EQ(result.exit_code, 2) << absl::StrJoin(args, " ") << "\n" << result.err;
    EXPECT_THAT(result.err, StartsWith("kvindex route: ")) << absl::StrJoin(args, " ");
    EXPECT_THAT(result.err, HasSubstr("usage: kvindex route")) << absl::StrJoin(args, " ");
    EXPECT_EQ(result.out, "") << absl::StrJoin(args, " ");
  }
  // The messages say what is wrong.
  EXPECT_THAT(Cli({"route", "--model", "m", "--tokens", "1,2"}).err, HasSubstr("--pod NS/NAME is required"));
  EXPECT_THAT(Cli({"route", "--model", "m", "--tokens", "1,2", "--hashes", "0x1", "--pod", "default/silent"}).err,
              HasSubstr("give exactly one of --tokens, --tokens-file, --hashes"));
  EXPECT_THAT(Cli({"route", "--model", "m", "--tokens", "1,2", "--pod", "default/silent", "--ttl-ms", "-5"}).err,
              HasSubstr("--ttl-ms wants a non-negative integer, got '-5'"));
  EXPECT_THAT(Cli({"route", "--model", "m", "--tokens", "1,2", "--pod", "default/silent", "--rank", "abc"}).err,
              HasSubstr("--rank wants a non-negative integer, got 'abc'"));
  // A file named on the command line that cannot be read is a usage error too (no usage text).
  const CommandResult unreadable =
      Cli({"route", "--model", "m", "--tokens-file", "/nonexistent/tokens", "--pod", "default/silent"});
  EXPECT_EQ(unreadable.exit_code, 2) << unreadable.err;
  EXPECT_THAT(unreadable.err, StartsWith("kvindex route: "));
  // Found before any call: a server that is not there is never reached.
  const CommandResult nowhere = RunCommand({BinPath("kvindex"), "route", "--model", "m", "--tokens", "1,2", "--pod",
                                            "default/silent", "--ttl-ms", "x", "--server", "127.0.0.1:1"});
  EXPECT_EQ(nowhere.exit_code, 2) << nowhere.err;
  EXPECT_THAT(nowhere.err, Not(HasSubstr("UNAVAILABLE")));
  // --help is no error.
  const CommandResult help = Cli({"route", "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_THAT(help.out, StartsWith("usage: kvindex route"));
  // And none of them recorded anything.
  const nlohmann::json match = MatchJson("--tokens", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16");
  ASSERT_TRUE(match.is_object());
  EXPECT_TRUE(match["pods"].empty()) << match.dump();
}

}  // namespace
}  // namespace kvindex::testing
