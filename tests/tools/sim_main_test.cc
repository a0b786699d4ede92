// The kvindex-sim binary: flags, --print_pods / --pods_file (parsed as the real
// kvindex.v1.PodSnapshot), --truth_file / --prompts_file and the summary line.

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvindex/v1/kvindex.pb.h"
#include "nlohmann/json.hpp"
#include "proto/text_proto.h"

namespace kvindex::sim {
namespace {

const std::string kSim = std::string(KVINDEX_BIN_DIR) + "/kvindex-sim";

struct SimRun {
  int exit_code = -1;
  std::string out;  // stdout; stderr goes to the test log
};

SimRun Sim(const std::string& args) {
  SimRun r;
  FILE* p = popen((kSim + " " + args).c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class SimMainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kvindex_sim_main_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(SimMainTest, PrintPodsIsAPodSnapshotWithThePortScheme) {
  SimRun r = Sim("--print_pods --pods=3 --base_port=20000 --namespace=team --model=llama --topic='kv@{ip}@{model}'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  kvindex::v1::PodSnapshot snapshot;
  ASSERT_TRUE(ParseTextProto(r.out, &snapshot).ok()) << r.out;
  ASSERT_EQ(snapshot.pods_size(), 3);
  for (int i = 0; i < 3; ++i) {
    const auto& pod = snapshot.pods(i);
    EXPECT_EQ(pod.namespace_(), "team");
    EXPECT_EQ(pod.name(), "sim-" + std::to_string(i));
    EXPECT_EQ(pod.ip(), "127.0.0.1");
    EXPECT_EQ(pod.phase(), "Running");
    EXPECT_EQ(pod.model(), "llama");
    EXPECT_EQ(pod.events_port(), 20000u + 2 * i);
    ASSERT_TRUE(pod.has_replay_port());
    EXPECT_EQ(pod.replay_port(), 20001u + 2 * i);
    EXPECT_EQ(pod.topic(), "kv@127.0.0.1@llama");
    EXPECT_EQ(pod.labels().at("model.aibrix.ai/kv-events-enabled"), "true");
    EXPECT_EQ(pod.labels().at("model.aibrix.ai/name"), "llama");
  }
}

TEST_F(SimMainTest, DataParallelPodsGetRankPortsAndNoReplayIsPortZero) {
  SimRun r = Sim("--print_pods --pods=2 --dp_size=2 --base_port=30000 --replay=false");
  ASSERT_EQ(r.exit_code, 0);
  kvindex::v1::PodSnapshot snapshot;
  ASSERT_TRUE(ParseTextProto(r.out, &snapshot).ok()) << r.out;
  ASSERT_EQ(snapshot.pods_size(), 2);
  EXPECT_EQ(snapshot.pods(1).events_port(), 30004u);
  EXPECT_EQ(snapshot.pods(1).dp_size(), 2u);
  ASSERT_TRUE(snapshot.pods(1).has_replay_port());
  EXPECT_EQ(snapshot.pods(1).replay_port(), 0u);
}

// --ports puts a new process on a previous one's ports (the reliability tests
// restart engines on the ports the kernel gave them); --print_pods binds nothing.
TEST_F(SimMainTest, PortsNameEveryEnginesPortsInOrder) {
  SimRun r = Sim("--print_pods --pods=2 --dp_size=2 --ports=41000:41100,41001:41101,42000:42100,42001:42101");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  kvindex::v1::PodSnapshot snapshot;
  ASSERT_TRUE(ParseTextProto(r.out, &snapshot).ok()) << r.out;
  ASSERT_EQ(snapshot.pods_size(), 2);
  EXPECT_EQ(snapshot.pods(0).events_port(), 41000u);
  EXPECT_EQ(snapshot.pods(0).replay_port(), 41100u);
  EXPECT_EQ(snapshot.pods(1).events_port(), 42000u);
  EXPECT_EQ(snapshot.pods(1).replay_port(), 42100u);

  SimRun no_replay = Sim("--print_pods --pods=2 --replay=false --ports=41000,42000");
  ASSERT_EQ(no_replay.exit_code, 0) << no_replay.out;
  ASSERT_TRUE(ParseTextProto(no_replay.out, &snapshot).ok()) << no_replay.out;
  EXPECT_EQ(snapshot.pods(1).events_port(), 42000u);
  EXPECT_EQ(snapshot.pods(1).replay_port(), 0u);

  SimRun too_few = Sim("--print_pods --pods=2 --ports=41000:41001 2>&1");
  EXPECT_EQ(too_few.exit_code, 2);
  EXPECT_THAT(too_few.out, ::testing::HasSubstr("--ports names 1 engines, not 2"));
  SimRun no_replay_port = Sim("--print_pods --pods=1 --ports=41000 2>&1");
  EXPECT_EQ(no_replay_port.exit_code, 2);
  EXPECT_THAT(no_replay_port.out,
              ::testing::HasSubstr("--ports: every engine needs a replay port (or --replay=false)"));
  SimRun bad = Sim("--print_pods --pods=1 --ports=41000:x 2>&1");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.out, ::testing::HasSubstr("--ports: \"41000:x\" is not events[:replay] (ports 1-65535)"));
}

TEST_F(SimMainTest, BadFlagsExitWithUsageError) {
  SimRun r = Sim("--layout=json --pods=1 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, ::testing::HasSubstr("--layout: unknown payload layout \"json\""));
  EXPECT_EQ(Sim("--print_pods --base_port=0 2>/dev/null").exit_code, 2);
}

TEST_F(SimMainTest, RunWritesPodsTruthAndPromptsThenASummary) {
  const auto truth = dir_ / "truth.json", prompts = dir_ / "prompts.json", pods = dir_ / "pods.textproto";
  SimRun r = Sim("--pods=3 --base_port=0 --rate=0 --requests=40 --layout=mixed --hash=mixed --cpu_capacity_blocks=64"
              " --capacity_blocks=128 --stats_interval=0 --log_level=warn --truth_file=" + truth.string() +
              " --prompts_file=" + prompts.string() + " --pods_file=" + pods.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;

  const auto summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["engines"], 3);
  EXPECT_EQ(summary["requests"], 120);
  EXPECT_GT(summary["blocks_stored"].get<uint64_t>(), 0u);

  kvindex::v1::PodSnapshot snapshot;
  ASSERT_TRUE(ParseTextProto(Slurp(pods), &snapshot).ok());
  ASSERT_EQ(snapshot.pods_size(), 3);

  const auto t = nlohmann::json::parse(Slurp(truth));
  ASSERT_EQ(t["pods"].size(), 3u);
  const char* layouts[] = {"map", "array", "sglang"};
  const char* hashes[] = {"int", "bytes", "int"};
  for (int i = 0; i < 3; ++i) {
    const auto& pod = t["pods"][i];
    EXPECT_EQ(pod["key"], "default/sim-" + std::to_string(i));
    EXPECT_EQ(pod["layout"], layouts[i]);
    EXPECT_EQ(pod["hash"], hashes[i]);
    EXPECT_EQ(pod["block_size"], 16);
    EXPECT_EQ(pod["events_port"].get<uint32_t>(), snapshot.pods(i).events_port());
    EXPECT_EQ(pod["replay_port"].get<uint32_t>(), snapshot.pods(i).replay_port());
    ASSERT_EQ(pod["workers"].size(), 1u);
    const auto& w = pod["workers"][0];
    EXPECT_EQ(w["last_seq"].get<int64_t>() + 1, w["batches"].get<int64_t>());
    EXPECT_GT(w["blocks"].get<uint64_t>(), 0u);
    EXPECT_LE(w["gpu_blocks"].get<uint64_t>(), 128u);
    EXPECT_LE(w["cpu_blocks"].get<uint64_t>(), 64u);
    EXPECT_THAT(w["held"][0]["hash"].get<std::string>(), ::testing::MatchesRegex("0x[0-9a-f]{16}"));
  }

  const auto p = nlohmann::json::parse(Slurp(prompts));
  EXPECT_EQ(p["model"], "sim-model");
  ASSERT_GE(p["prompts"].size(), 5u);  // 4 system prompts + novel, then conversations
  size_t system_holders = 0;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(p["prompts"][i]["label"], "system-" + std::to_string(i));
    system_holders += p["prompts"][i]["expected"].size();
  }
  EXPECT_GE(system_holders, 3u);  // system prompts are shared by the pods
  EXPECT_EQ(p["prompts"][4]["label"], "novel");
  EXPECT_TRUE(p["prompts"][4]["expected"].empty());
  for (const auto& e : p["prompts"][0]["expected"]) {
    EXPECT_EQ(e["matched_tokens"].get<uint32_t>(), e["matched_blocks"].get<uint32_t>() * 16);
  }
}

}  // namespace
}  // namespace kvindex::sim
