// kvindex-sim's gateway mode (tools/sim/gateway.h) against a real
// kvindex-server: bursts of requests sharing a new prefix, the engines' events
// delayed past each burst. Routed by Match alone, a burst's later requests
// cannot see where its first went and are spread over the other pods, each
// recomputing the prefix; with RecordRouting they follow the first and
// recompute nothing. The counts are exact: the delay is far longer than a burst.

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"

namespace kvindex::testing {
namespace {

constexpr int kPods = 4;
constexpr int kBursts = 5;
constexpr int kBurstSize = 4;
constexpr int kPrefixTokens = 256;  // 16 blocks of 16
constexpr int kSuffixTokens = 40;   // 2 full blocks of the request's own, and a partial one

// Runs the simulator in gateway mode against a new server; its report.
nlohmann::json RouteBursts(bool hint) {
  absl::StatusOr<ServerProcess> server = StartServerProcess({});
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return {};
  const CommandResult run = RunCommand(
      {BinPath("kvindex-sim"), absl::StrCat("--pods=", kPods), "--base_port=0", "--block_size=16",
       absl::StrCat("--gateway=", server->address), absl::StrCat("--gateway_hint=", hint ? "true" : "false"),
       absl::StrCat("--bursts=", kBursts), absl::StrCat("--burst_size=", kBurstSize),
       absl::StrCat("--burst_prefix_tokens=", kPrefixTokens), absl::StrCat("--burst_suffix_tokens=", kSuffixTokens),
       "--request_gap=1ms", "--burst_gap=20ms", "--event_delay=4s", "--stats_interval=0"},
      absl::Seconds(120));
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  // The summary is the last line (the log goes to stdout before it).
  std::vector<std::string> lines = absl::StrSplit(run.out, '\n', absl::SkipWhitespace());
  EXPECT_FALSE(lines.empty()) << run.err;
  if (lines.empty()) return {};
  const nlohmann::json summary = nlohmann::json::parse(lines.back(), nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(summary.contains("gateway")) << run.out;
  return summary.value("gateway", nlohmann::json::object());
}

TEST(GatewayTest, HintsSendABurstWhereItsPrefixIsAndNothingIsRecomputed) {
  constexpr uint64_t kRequests = kBursts * kBurstSize;
  // Every request but a burst's first could reuse the prefix somewhere.
  constexpr uint64_t kReusable = uint64_t{kBursts} * (kBurstSize - 1) * kPrefixTokens;

  const nlohmann::json match_only = RouteBursts(/*hint=*/false);
  ASSERT_FALSE(match_only.empty());
  EXPECT_EQ(match_only["requests"], kRequests);
  EXPECT_EQ(match_only["prompt_tokens"], kRequests * (kPrefixTokens + kSuffixTokens));
  EXPECT_EQ(match_only["rpc_errors"], 0);
  EXPECT_EQ(match_only["hints"], 0);
  // No Match saw a burst's blocks (delayed): least loaded spreads the burst
  // over the pods, none of which has the prefix.
  EXPECT_EQ(match_only["routed_by_match"], 0);
  EXPECT_EQ(match_only["reusable_tokens"], kReusable);
  EXPECT_EQ(match_only["cached_tokens"], 0);
  EXPECT_EQ(match_only["recomputed_tokens"], kReusable);

  const nlohmann::json hinted = RouteBursts(/*hint=*/true);
  ASSERT_FALSE(hinted.empty());
  EXPECT_EQ(hinted["requests"], kRequests);
  EXPECT_EQ(hinted["rpc_errors"], 0);
  EXPECT_EQ(hinted["hints"], kRequests);
  // A burst's later requests match the first one's speculative entries.
  EXPECT_EQ(hinted["routed_by_match"], uint64_t{kBursts} * (kBurstSize - 1));
  EXPECT_EQ(hinted["reusable_tokens"], kReusable);
  EXPECT_EQ(hinted["cached_tokens"], kReusable);
  EXPECT_EQ(hinted["recomputed_tokens"], 0);
}

TEST(GatewayTest, AnUnreachableServerIsAClearError) {
  const CommandResult run = RunCommand({BinPath("kvindex-sim"), "--pods=1", "--base_port=0",
                                        "--gateway=127.0.0.1:1", "--stats_interval=0"},
                                       absl::Seconds(60));
  EXPECT_EQ(run.exit_code, 1);
  // The simulator logs to stdout.
  EXPECT_NE(run.out.find("[error] gateway: UNAVAILABLE"), std::string::npos) << run.out << run.err;
}

}  // namespace
}  // namespace kvindex::testing
