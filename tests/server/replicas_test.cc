// Scale-out end to end: three kvindex-server processes on 127.0.0.1, each
// subscribed to the same simulated engines (kvindex-sim: four pods, mixed
// payload layouts, hash encodings and replay forms, GPU and CPU tiers with
// evictions; chunked CPU offloading, hybrid window and Mamba groups,
// multimodal and salted prompts), each pushed the same pods with `kvindex pods
// apply`. Once the
// traffic is over and every replica has applied every engine's last batch,
// every replica equals the simulator's ground truth with the fault tests' own
// check (CompareWithTruth: blocks per worker and per tier, every held chain,
// every sample prompt), and all replicas answer each sample prompt identically
// (order and scores included).

#include <csignal>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/kvindex_client.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/reliability/sim_process.h"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"
#include "tests/testing/clients.h"

namespace kvindex::testing {
namespace {

constexpr int kReplicas = 3;
constexpr int kPods = 4;
constexpr int kRequestsPerEngine = 120;

// A replica's warnings and errors (the last 40), to say why it differs.
std::string WarningsOf(const ServerProcess& replica) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(replica.process->Stderr(), '\n')) {
    if (absl::StrContains(line, "[warning]") || absl::StrContains(line, "[error]")) lines.emplace_back(line);
  }
  if (lines.size() > 40) lines.erase(lines.begin(), lines.end() - 40);
  return absl::StrCat("replica's warnings:\n", absl::StrJoin(lines, "\n"));
}

TEST(ReplicasTest, EveryReplicaAnswersAlikeAndAsTheGroundTruth) {
  // The engines start publishing at once (only the pods file is awaited); the
  // replicas subscribe a moment later and catch up through replay from 0 (a
  // new replica starts warm).
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      {absl::StrCat("--pods=", kPods), "--base_port=0", absl::StrCat("--requests=", kRequestsPerEngine), "--rate=40",
       "--keep_running", "--layout=mixed", "--hash=mixed", "--replay_form=mixed", "--capacity_blocks=96",
       "--cpu_capacity_blocks=64", "--conversations=6",
       // The 2026 engines (issue 15): pod 0 (map) offloads in vLLM's chunks
       // and is a sliding-window hybrid, pod 1 (array) a Mamba hybrid with
       // the per-block CPU tier, pods 2 (sglang) and 3 (map) single-group;
       // the vLLM pods get multimodal and salted prompts. A hybrid pod's hit
       // needs group 1 at its end, so partial matches come from the
       // single-group pods and the hybrid ones are checked by their cuts.
       "--offload_chunk_blocks=4,0,0,0", "--hybrid=window:40,mamba,none,none", "--mm_fraction=0.25",
       "--salted_tenants=1"},
      /*read_pods=*/false);
  ASSERT_TRUE(sim.ok()) << sim.status();

  std::vector<ServerProcess> replicas;
  std::vector<std::unique_ptr<client::KvIndexClient>> clients;
  for (int i = 0; i < kReplicas; ++i) {
    absl::StatusOr<ServerProcess> server = StartServerProcess({});
    ASSERT_TRUE(server.ok()) << server.status();
    const CommandResult applied =
        RunCommand({BinPath("kvindex"), "pods", "apply", "-f", (*sim)->PodsFile(), "--server", server->address});
    ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
    std::unique_ptr<client::KvIndexClient> client = testutil::Connect(server->address, absl::Seconds(10));
    ASSERT_NE(client, nullptr);
    clients.push_back(std::move(client));
    replicas.push_back(*std::move(server));
  }

  // Settled: the traffic is over (the simulator said so and its final truth
  // is written) and every replica has applied every engine's last batch.
  absl::Status done = (*sim)->WaitTrafficDone(absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done << "\nsim: " << (*sim)->process().Stderr();
  const absl::StatusOr<nlohmann::json> truth = (*sim)->Truth();
  const absl::StatusOr<nlohmann::json> prompts = (*sim)->Prompts();
  ASSERT_TRUE(truth.ok()) << truth.status();
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_EQ((*truth)["pods"].size(), static_cast<size_t>(kPods));

  for (int i = 0; i < kReplicas; ++i) {
    absl::Status caught_up = WaitForCatchUp(*clients[i], *truth, absl::Seconds(90));
    ASSERT_TRUE(caught_up.ok()) << "replica " << i << ": " << caught_up << "\n" << WarningsOf(replicas[i]);
    absl::StatusOr<TruthComparison> same = CompareWithTruth(*clients[i], *truth, *prompts);
    ASSERT_TRUE(same.ok()) << "replica " << i << ":\n" << same.status() << "\n" << WarningsOf(replicas[i]);
    EXPECT_EQ(same->workers, static_cast<size_t>(kPods));
    EXPECT_GT(same->cpu_blocks, 0u) << "the CPU tier was never compared";
    EXPECT_GT(same->partial_matches, 0u) << "no chain matched some worker only partly: the workload is too easy";
    EXPECT_GT(same->hybrid_cuts, 0u) << "vLLM's group-1 rule never shortened a hybrid pod's hit";
    EXPECT_GT(same->prompt_matches, 0u) << "no sample prompt is cached anywhere";
    absl::StatusOr<v1::GetStatsResponse> stats = clients[i]->GetStats();
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->workers(), static_cast<uint64_t>(kPods)) << "replica " << i;
    EXPECT_EQ(stats->unresolved_parents(), 0u) << "replica " << i;
    EXPECT_EQ(stats->decode_errors(), 0u) << "replica " << i;
  }

  // Alike down to the order and the scores.
  size_t salted = 0;
  size_t multimodal = 0;
  for (const auto& prompt : (*prompts)["prompts"]) {
    salted += prompt.contains("cache_salt") ? 1 : 0;
    multimodal += prompt.value("mm_inputs", nlohmann::json::array()).empty() ? 0 : 1;
    v1::MatchRequest request;
    request.set_model((*prompts)["model"].get<std::string>());
    for (const auto& t : prompt["tokens"]) request.add_token_ids(t.get<uint32_t>());
    if (prompt.contains("cache_salt")) request.set_cache_salt(prompt["cache_salt"].get<std::string>());
    for (const auto& in : prompt.value("mm_inputs", nlohmann::json::array())) {
      v1::MultimodalInput* mm = request.add_mm_inputs();
      mm->set_identifier(in["identifier"].get<std::string>());
      mm->set_offset(in["offset"].get<uint32_t>());
      mm->set_length(in["length"].get<uint32_t>());
    }
    std::vector<v1::MatchResponse> answers;
    for (int i = 0; i < kReplicas; ++i) {
      absl::StatusOr<v1::MatchResponse> answer = clients[i]->Match(request);
      ASSERT_TRUE(answer.ok()) << answer.status();
      answers.push_back(*std::move(answer));
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(answers[0], answers[i]))
          << prompt["label"] << ": replica " << i << " differs:\n"
          << answers[0].DebugString() << "\nvs\n"
          << answers[i].DebugString() << "\n"
          << WarningsOf(replicas[i]);
    }
  }

  EXPECT_GT(salted, 0u) << "no sample prompt carries a cache_salt";
  EXPECT_GT(multimodal, 0u) << "no sample prompt carries mm_inputs";

  for (ServerProcess& replica : replicas) {
    replica.process->Signal(SIGTERM);
    EXPECT_EQ(replica.process->Wait(absl::Seconds(10)), 0) << replica.process->Stderr();
  }
}

}  // namespace
}  // namespace kvindex::testing
