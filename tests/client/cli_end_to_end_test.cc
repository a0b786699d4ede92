// End to end with real processes: kvindex-server, a fake vLLM engine
// publishing KV events over ZeroMQ, and the kvindex CLI. Apply a pod, publish
// events, `kvindex match` names the pod with the right matched tokens; delete
// the pod, the match is gone.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/fake_engine.h"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"

namespace kvindex::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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

  // A server that is not there is UNAVAILABLE, exit 1.
  result = RunCommand({BinPath("kvindex"), "stats", "--server", "127.0.0.1:1", "--timeout", "2"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("UNAVAILABLE"));
}

}  // namespace
}  // namespace kvindex::testing
