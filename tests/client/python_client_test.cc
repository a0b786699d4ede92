// The Python example client (client/python/kvindex_example.py, stubs made at
// run time by grpc_tools.protoc) against a real kvindex-server fed by a fake
// engine.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

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

constexpr uint32_t kBlockSize = 16;
constexpr uint32_t kBlocks = 3;

// Runs the example with TMPDIR set to `tmp_dir`, where it makes its stubs.
CommandResult Python(const ServerProcess& server, std::vector<std::string> args,
                     const std::string& tmp_dir = ::testing::TempDir()) {
  std::vector<std::string> argv = {KVINDEX_PYTHON, absl::StrCat(KVINDEX_SOURCE_DIR, "/client/python/kvindex_example.py"),
                                   "--server", server.address, "--token", "py-token"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, absl::Seconds(60), {{"TMPDIR", tmp_dir}});
}

// The stubs it generates at start are gone when it exits, whether the call
// succeeded or not.
TEST(PythonClientTest, ExampleLeavesNoStubsBehind) {
  absl::StatusOr<ServerProcess> server = StartServerProcess({});
  ASSERT_TRUE(server.ok()) << server.status();
  TempDirectory tmp("python-tmp");
  EXPECT_EQ(Python(*server, {"stats"}, tmp.path()).exit_code, 0);
  EXPECT_EQ(Python(*server, {"match", "--model", "", "--tokens", "1"}, tmp.path()).exit_code, 1);
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path()));
}

TEST(PythonClientTest, ExampleClientDrivesARealServer) {
  absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create({.replay = false});
  ASSERT_TRUE(engine.ok()) << engine.status();
  absl::StatusOr<ServerProcess> server =
      StartServerProcess({"--auth_token_file=" + WriteTempFile("token", "py-token")});
  ASSERT_TRUE(server.ok()) << server.status();

  const std::string snapshot = WriteTempFile("py-snapshot.textproto", absl::StrCat(R"(
    pods {
      namespace: "team" name: "engine-0" ip: "127.0.0.1" phase: "Running" model: "qwen"
      labels { key: "model.aibrix.ai/kv-events-enabled" value: "true" }
      events_port: )", (*engine)->events_port(), R"( replay_port: 0
    })"));
  CommandResult result = Python(*server, {"pods-apply", snapshot});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  nlohmann::json ack = nlohmann::json::parse(result.out);
  EXPECT_EQ(ack["pods"][0]["pod"], "team/engine-0");
  EXPECT_EQ(ack["pods"][0]["outcome"], "POD_OUTCOME_SUBSCRIBED");
  ASSERT_TRUE((*engine)->WaitForSubscribers(1, absl::Seconds(20)));

  for (uint32_t k = 0; k < kBlocks; ++k) (*engine)->Publish(ChainBlockPayload(k, kBlockSize));
  const std::string tokens = absl::StrJoin(PromptTokens(kBlocks, kBlockSize), ",");
  nlohmann::json match;
  ASSERT_TRUE(WaitFor(
      [&] {
        result = Python(*server, {"match", "--model", "qwen", "--tokens", tokens});
        if (result.exit_code != 0) return false;
        match = nlohmann::json::parse(result.out);
        return match["pods"].size() == 1 && match["pods"][0]["matched_tokens"] == kBlocks * kBlockSize;
      },
      absl::Seconds(30)))
      << result.out << result.err;
  EXPECT_EQ(match["pods"][0]["pod"], "team/engine-0");

  result = Python(*server, {"stats"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(nlohmann::json::parse(result.out)["subscribed_pods"], "1");

  result = Python(*server, {"pods-list"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(nlohmann::json::parse(result.out)["pods"][0]["key"], "team/engine-0");

  // Errors come back as gRPC codes.
  result = Python(*server, {"match", "--model", "", "--tokens", "1,2"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("INVALID_ARGUMENT"));

  result = Python(*server, {"pods-delete", "team/engine-0"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(nlohmann::json::parse(result.out)["outcome"], "POD_OUTCOME_REMOVED");
}

}  // namespace
}  // namespace kvindex::testing
