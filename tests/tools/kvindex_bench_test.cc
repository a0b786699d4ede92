// Smoke runs of the benchmark tools against real processes on 127.0.0.1:
// kvindex-bench against a kvindex-server following a kvindex-sim (and with
// --spawn), kvindex-ingest-bench for a second of each measurement. Checks only
// that they run and report well-formed, plausible numbers, never how fast.

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"
#include "tests/testing/wait.h"

namespace kvindex::testing {
namespace {

// True once `path` exists and is not empty (within `timeout`).
bool WaitForFile(const std::filesystem::path& path, absl::Duration timeout) {
  return testutil::WaitFor(
      [&] {
        std::error_code ec;
        return std::filesystem::exists(path, ec) && std::filesystem::file_size(path, ec) > 0;
      },
      timeout, absl::Milliseconds(20));
}

nlohmann::json ParseReport(const CommandResult& r) {
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? nlohmann::json::object() : j;
}

// count > 0 and min <= p50 <= p90 <= p99 <= max, all positive.
void ExpectSaneLatency(const nlohmann::json& l, const std::string& what) {
  SCOPED_TRACE(what + ": " + l.dump());
  ASSERT_TRUE(l.is_object());
  EXPECT_GT(l.value("count", 0), 0);
  EXPECT_GT(l.value("min_us", 0.0), 0.0);
  EXPECT_LE(l.value("min_us", 0.0), l.value("p50_us", 0.0));
  EXPECT_LE(l.value("p50_us", 0.0), l.value("p90_us", 0.0));
  EXPECT_LE(l.value("p90_us", 0.0), l.value("p99_us", 0.0));
  EXPECT_LE(l.value("p99_us", 0.0), l.value("max_us", 0.0));
}

void ExpectSaneMatchReport(const nlohmann::json& report, size_t mix_entries) {
  SCOPED_TRACE(report.dump(2));
  ASSERT_TRUE(report.contains("health"));
  ASSERT_TRUE(report.contains("match"));
  for (const char* phase : {"health", "match"}) {
    const nlohmann::json& p = report[phase];
    EXPECT_GT(p.value("rps", 0.0), 0.0) << phase;
    EXPECT_GT(p.value("calls", 0), 0) << phase;
    EXPECT_EQ(p.value("errors", 1), 0) << phase;
    ExpectSaneLatency(p["latency"], phase);
  }
  // The prompts come from the simulator's cached system prompts: every Match hits.
  EXPECT_DOUBLE_EQ(report["match"].value("hit_ratio", 0.0), 1.0);
  EXPECT_GE(report["match"].value("pods_per_hit", 0.0), 1.0);
  ASSERT_EQ(report["match"]["by_prompt"].size(), mix_entries);
  for (const nlohmann::json& p : report["match"]["by_prompt"]) ExpectSaneLatency(p["latency"], "by_prompt");
  EXPECT_GT(report.value("match_to_health", 0.0), 0.0);
  EXPECT_GE(report["machine"].value("nproc", 0), 1);
  EXPECT_EQ(report["machine"]["loadavg"].size(), 3u);
}

class KvindexBenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("kvindex_bench_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

// --help of each tool: its usage and its own flags on stdout, exit 0.
TEST(ToolHelpTest, EachToolListsItsOwnFlagsAndExitsZero) {
  struct Case {
    std::string tool;
    std::vector<std::string> flags;  // some of its own
  };
  for (const Case& c : std::vector<Case>{
           {"kvindex-sim", {"--pods", "--base_port", "--truth_file", "--rate"}},
           {"kvindex-bench", {"--concurrency", "--prompt_mix", "--spawn", "--server", "--tls_ca_file"}},
           {"kvindex-ingest-bench", {"--mode", "--step_duration", "--step_warmup", "--server"}},
       }) {
    SCOPED_TRACE(c.tool);
    const CommandResult r = RunCommand({BinPath(c.tool), "--help"}, absl::Seconds(20));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.rfind(c.tool + ": ", 0), 0u) << r.out;
    EXPECT_EQ(r.out.find("No flags matched"), std::string::npos);
    EXPECT_EQ(r.out.find("--flagfile"), std::string::npos) << "absl's flags are not the tool's";
    for (const std::string& flag : c.flags) EXPECT_NE(r.out.find("\n  " + flag + "="), std::string::npos) << flag;
  }
}

TEST(ToolHelpTest, IngestBenchRefusesAStepNoLongerThanItsWarmup) {
  for (const char* duration : {"--step_duration=2s", "--step_duration=1s"}) {
    const CommandResult r = RunCommand({BinPath("kvindex-ingest-bench"), duration, "--step_warmup=2s"}, absl::Seconds(20));
    EXPECT_EQ(r.exit_code, 2) << duration;
    EXPECT_NE(r.err.find("must be longer than --step_warmup=2s"), std::string::npos) << r.err;
  }
}

TEST_F(KvindexBenchTest, ReportsMatchAndEmptyRpcAgainstARealServer) {
  const std::string pods = dir_ / "pods.textproto";
  const std::string prompts = dir_ / "prompts.json";
  auto sim = Subprocess::Start({BinPath("kvindex-sim"), "--pods=2", "--base_port=0", "--pods_file=" + pods,
                                "--prompts_file=" + prompts, "--system_prompts=2", "--system_prompt_tokens=2048",
                                "--conversations=2", "--turn_tokens=64", "--capacity_blocks=4096", "--rate=0",
                                "--requests=16", "--keep_running", "--stats_interval=0"});
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_TRUE(WaitForFile(pods, absl::Seconds(20))) << (*sim)->Stdout() << (*sim)->Stderr();
  auto server = StartServerProcess({"--pods_file=" + pods});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(WaitForFile(prompts, absl::Seconds(20))) << (*sim)->Stdout() << (*sim)->Stderr();

  const CommandResult r = RunCommand({BinPath("kvindex-bench"), "--server=" + server->address,
                                      "--prompts_file=" + prompts, "--prompt_mix=512:1,2048:2", "--concurrency=4",
                                      "--duration=1s", "--warmup=200ms", "--wait_for_hits=15s", "--json"},
                                     absl::Seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json report = ParseReport(r);
  ExpectSaneMatchReport(report, 2);
  EXPECT_EQ(report["config"].value("concurrency", 0), 4);
  EXPECT_EQ(report["match"]["by_prompt"][0].value("tokens", 0), 512);
  EXPECT_EQ(report["match"]["by_prompt"][1].value("tokens", 0), 2048);
}

// Also Match by block hashes computed by the bench: every call hits only if they are the server's.
TEST_F(KvindexBenchTest, SpawnsItsOwnServerAndSimulatorAndPrintsTables) {
  const std::string json_file = dir_ / "report.json";
  const CommandResult r = RunCommand({BinPath("kvindex-bench"), "--spawn", "--request=hashes", "--concurrency=2",
                                      "--duration=500ms",
                                      "--warmup=100ms", "--prompt_tokens=1024", "--json_file=" + json_file,
                                      "--sim_args=--pods=2 --system_prompts=2 --system_prompt_tokens=1024 "
                                      "--conversations=2 --turn_tokens=64 --rate=0 --requests=8 --keep_running "
                                      "--stats_interval=0"},
                                     absl::Seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("Match / empty-RPC throughput"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Health/Check"), std::string::npos) << r.out;
  std::ifstream in(json_file);
  const nlohmann::json report = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(report.is_discarded());
  ExpectSaneMatchReport(report, 1);
  EXPECT_TRUE(report.value("spawned", false));
  EXPECT_EQ(report["config"].value("request", ""), "hashes");
  EXPECT_EQ(report["config"].value("block_size", 0), 16);
  EXPECT_TRUE(report["health"].contains("server_cpu_us_per_call"));
}

// --rpc=route: RecordRouting of new prompts (--route_prompts), each to one of
// the sim's pods; every call writes or refreshes one entry per block.
TEST_F(KvindexBenchTest, RouteModeRecordsRoutingAgainstTheEmptyRpc) {
  const std::string json_file = dir_ / "route.json";
  const CommandResult r = RunCommand({BinPath("kvindex-bench"), "--spawn", "--rpc=route", "--route_prompts=4",
                                      "--route_ttl_ms=600000", "--concurrency=2", "--duration=500ms",
                                      "--warmup=100ms", "--prompt_tokens=1024", "--json_file=" + json_file,
                                      "--sim_args=--pods=2 --system_prompts=2 --system_prompt_tokens=1024 "
                                      "--conversations=2 --turn_tokens=64 --rate=0 --requests=8 --keep_running "
                                      "--stats_interval=0"},
                                     absl::Seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("RecordRouting / empty-RPC throughput"), std::string::npos) << r.out;
  std::ifstream in(json_file);
  const nlohmann::json report = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(report.is_discarded());
  EXPECT_FALSE(report.contains("match"));
  ASSERT_TRUE(report.contains("route")) << report.dump(2);
  EXPECT_GT(report["route"].value("calls", uint64_t{0}), 0u);
  EXPECT_EQ(report["route"].value("errors", uint64_t{1}), 0u);
  EXPECT_EQ(report["route"].value("blocks_per_call", 0.0), 64.0);  // 1024 tokens, 16-token blocks
  EXPECT_EQ(report["config"]["route_pods"].size(), 2u);
  EXPECT_EQ(report["config"].value("rpc", ""), "route");
}

// Probes go out one at a time, each waited for: 3 s leaves room for several
// even in a sanitizer build on a busy machine. Probing starts once the index
// holds the engines' full caches, a condition the bench waits for: its
// deadline (--lag_fill_timeout) outlasts the engines' traffic (warmup +
// duration + 30 s), so only an index that never fills misses it, not a slow one.
TEST_F(KvindexBenchTest, IngestBenchMeasuresLagAndRamp) {
  const CommandResult r =
      RunCommand({BinPath("kvindex-ingest-bench"), "--pods=2", "--turn_tokens=1024", "--lag_rate=20000",
                  "--capacity_blocks=1024", "--lag_fill_timeout=120s",
                  "--lag_duration=3s", "--lag_warmup=300ms", "--ramp=50k", "--step_duration=1500ms",
                  "--step_warmup=300ms", "--json"},
                 absl::Seconds(300));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json report = ParseReport(r);
  SCOPED_TRACE(report.dump(2));
  ASSERT_TRUE(report.contains("lag"));
  const nlohmann::json& lag = report["lag"];
  EXPECT_GT(lag.value("probes", 0), 0);
  EXPECT_GT(lag.value("visible", 0), 0);
  EXPECT_EQ(lag.value("poll_errors", 1), 0);
  ExpectSaneLatency(lag["lag_upper"], "lag_upper");
  ExpectSaneLatency(lag["poll_rtt"], "poll_rtt");
  EXPECT_LE(lag["lag_lower"].value("p50_us", 0.0), lag["lag_upper"].value("p50_us", 0.0));
  EXPECT_GT(lag.value("applied_blocks_per_second", 0.0), 0.0);
  // Probing began once the index held 95 % of the engines' full caches (2 sim
  // pods and the probe pod, 1024 blocks each); the count when it began is a
  // little lower at most (an engine's eviction applied before its store).
  EXPECT_TRUE(lag.value("index_filled", false)) << "the index never filled";
  EXPECT_GE(lag.value("blocks_held", 0), 2900);
  // The spawned server's own histogram of the same window: every pod's batches.
  ASSERT_TRUE(lag.contains("server_lag"));
  const nlohmann::json& server_lag = lag["server_lag"];
  EXPECT_GT(server_lag.value("batches", 0), 0);
  EXPECT_GE(server_lag.value("within_1ms", -1.0), 0.0);
  EXPECT_LE(server_lag.value("within_1ms", 2.0), 1.0);
  EXPECT_GT(server_lag.value("p99_ms", 0.0), 0.0);
  EXPECT_LE(server_lag.value("p50_ms", 1.0), server_lag.value("p99_ms", 0.0));
  ASSERT_TRUE(report.contains("ramp"));
  ASSERT_EQ(report["ramp"]["steps"].size(), 1u);
  const nlohmann::json& step = report["ramp"]["steps"][0];
  EXPECT_GT(step.value("offered_blocks_per_second", 0.0), 0.0);
  EXPECT_GT(step.value("server_batches", 0), 0);
  EXPECT_GT(step.value("delivered", 0.0), 0.0);
  EXPECT_LE(step.value("delivered", 2.0), 1.0);
}

}  // namespace
}  // namespace kvindex::testing
