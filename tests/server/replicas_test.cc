// Scale-out end to end: three kvindex-server processes on 127.0.0.1, each
// subscribed to the same simulated engines (kvindex-sim: three pods, mixed
// payload layouts, hash encodings and replay forms, GPU and CPU tiers with
// evictions), each pushed the same pods with `kvindex pods apply`. Once the
// traffic is over and every replica has applied every engine's last batch,
// all replicas answer the same Match queries identically, and the answers are
// the simulator's ground truth (--truth_file, --prompts_file).

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/kvindex_client.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/fake_engine.h"  // WaitFor
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"

namespace kvindex::testing {
namespace {

constexpr int kReplicas = 3;
constexpr int kPods = 3;
constexpr int kRequestsPerEngine = 120;
constexpr size_t kMaxHashQueries = 400;

std::string Slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

uint64_t ParseHash(const std::string& hex) {
  uint64_t value = 0;
  EXPECT_TRUE(absl::SimpleHexAtoi(hex, &value)) << hex;
  return value;
}

// What one worker holds according to the simulator: index hash -> media.
struct TruthWorker {
  int64_t last_seq = -1;
  std::map<uint64_t, std::set<std::string>> held;
};
struct Truth {
  std::string model;
  uint32_t block_size = 0;
  std::map<std::pair<std::string, uint32_t>, TruthWorker> workers;  // (pod key, dp rank)
  std::map<uint64_t, std::optional<uint64_t>> parents;             // index hash -> parent
};

Truth ParseTruth(const nlohmann::json& json) {
  Truth truth;
  for (const auto& pod : json["pods"]) {
    truth.model = pod["model"];
    truth.block_size = pod["block_size"];
    for (const auto& w : pod["workers"]) {
      TruthWorker& worker = truth.workers[{pod["key"], w["dp_rank"]}];
      worker.last_seq = w["last_seq"];
      for (const auto& block : w["held"]) {
        const uint64_t hash = ParseHash(block["hash"]);
        for (const auto& medium : block["media"]) worker.held[hash].insert(medium);
        truth.parents[hash] = block["parent"].is_null() ? std::nullopt
                                                        : std::optional<uint64_t>(ParseHash(block["parent"]));
      }
    }
  }
  return truth;
}

// The chain of index hashes from block 0 to `leaf`.
std::vector<uint64_t> ChainTo(const Truth& truth, uint64_t leaf) {
  std::vector<uint64_t> chain;
  for (std::optional<uint64_t> h = leaf; h.has_value(); h = truth.parents.at(*h)) chain.push_back(*h);
  return {chain.rbegin(), chain.rend()};
}

// The answer the truth implies for `chain`: per worker holding block 0, its
// leading held blocks and their media.
std::map<std::pair<std::string, uint32_t>, std::pair<uint32_t, std::map<std::string, uint32_t>>> Expected(
    const Truth& truth, const std::vector<uint64_t>& chain) {
  std::map<std::pair<std::string, uint32_t>, std::pair<uint32_t, std::map<std::string, uint32_t>>> out;
  for (const auto& [key, worker] : truth.workers) {
    uint32_t matched = 0;
    std::map<std::string, uint32_t> media;
    for (uint64_t h : chain) {
      auto it = worker.held.find(h);
      if (it == worker.held.end()) break;
      ++matched;
      for (const std::string& m : it->second) ++media[m];
    }
    if (matched > 0) out[key] = {matched, media};
  }
  return out;
}

class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / absl::StrCat("replicas-", getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
};

TEST_F(ReplicasTest, EveryReplicaAnswersAlikeAndAsTheGroundTruth) {
  const std::filesystem::path pods = dir_ / "pods.textproto", truth_file = dir_ / "truth.json",
                              prompts_file = dir_ / "prompts.json";
  // The engines start publishing at once; the replicas subscribe a moment
  // later and catch up through replay from 0 (a new replica starts warm).
  absl::StatusOr<std::unique_ptr<Subprocess>> sim = Subprocess::Start(
      {BinPath("kvindex-sim"), absl::StrCat("--pods=", kPods), "--base_port=0", "--pods_file=" + pods.string(),
       "--truth_file=" + truth_file.string(), "--prompts_file=" + prompts_file.string(), "--truth_interval=200ms",
       absl::StrCat("--requests=", kRequestsPerEngine), "--rate=40", "--keep_running", "--layout=mixed",
       "--hash=mixed", "--replay_form=mixed", "--capacity_blocks=96", "--cpu_capacity_blocks=64",
       "--conversations=6", "--stats_interval=0"});
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(pods); }, absl::Seconds(20))) << (*sim)->Stderr();

  std::vector<ServerProcess> replicas;
  std::vector<std::unique_ptr<client::KvIndexClient>> clients;
  for (int i = 0; i < kReplicas; ++i) {
    absl::StatusOr<ServerProcess> server = StartServerProcess({});
    ASSERT_TRUE(server.ok()) << server.status();
    const CommandResult applied =
        RunCommand({BinPath("kvindex"), "pods", "apply", "-f", pods.string(), "--server", server->address});
    ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
    absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client =
        client::KvIndexClient::Create({.server = server->address, .timeout = absl::Seconds(10)});
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(*std::move(client));
    replicas.push_back(*std::move(server));
  }

  // Settled: the traffic is over (the simulator said so and its final truth
  // is written) and every replica has applied every engine's last batch.
  Truth truth;
  nlohmann::json prompts;
  std::string why;
  const bool settled = WaitFor(
      [&] {
        const std::string log = (*sim)->Stdout() + (*sim)->Stderr();
        if (log.find("traffic done") == std::string::npos) return (why = "traffic still running", false);
        const nlohmann::json t = nlohmann::json::parse(Slurp(truth_file), nullptr, false);
        prompts = nlohmann::json::parse(Slurp(prompts_file), nullptr, false);
        if (t.is_discarded() || prompts.is_discarded()) return (why = "truth being rewritten", false);
        // Both files come from one snapshot when their times agree.
        if (t["time"] != prompts["time"]) return (why = "truth and prompts from different snapshots", false);
        truth = ParseTruth(t);
        if (truth.workers.size() != kPods) return (why = "truth incomplete", false);
        for (int i = 0; i < kReplicas; ++i) {
          absl::StatusOr<v1::ListPodsResponse> listed = clients[i]->ListPods();
          if (!listed.ok()) return (why = listed.status().ToString(), false);
          for (const v1::PodInfo& pod : listed->pods()) {
            for (const v1::WorkerInfo& worker : pod.workers()) {
              const TruthWorker& expected = truth.workers[{pod.key(), worker.dp_rank()}];
              if (worker.last_seq() != expected.last_seq) {
                return (why = absl::StrCat("replica ", i, " ", pod.key(), " at seq ", worker.last_seq(), " of ",
                                           expected.last_seq),
                        false);
              }
            }
          }
        }
        return true;
      },
      absl::Seconds(90));
  ASSERT_TRUE(settled) << why << "\nsim: " << (*sim)->Stdout() << (*sim)->Stderr();

  // Same totals everywhere, and as many entries as the simulator's engines hold.
  size_t truth_entries = 0;
  for (const auto& [key, worker] : truth.workers) truth_entries += worker.held.size();
  for (int i = 0; i < kReplicas; ++i) {
    absl::StatusOr<v1::GetStatsResponse> stats = clients[i]->GetStats();
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->entries(), truth_entries) << "replica " << i;
    EXPECT_EQ(stats->workers(), static_cast<uint64_t>(kPods)) << "replica " << i;
    EXPECT_EQ(stats->unresolved_parents(), 0u) << "replica " << i;
    EXPECT_EQ(stats->decode_errors(), 0u) << "replica " << i;
  }

  // Hash queries: the chains of held blocks (a sample, deterministic).
  std::vector<uint64_t> blocks;
  for (const auto& [hash, parent] : truth.parents) blocks.push_back(hash);
  const size_t stride = std::max<size_t>(1, blocks.size() / kMaxHashQueries);
  size_t queries = 0, partial = 0;
  for (size_t q = 0; q < blocks.size(); q += stride) {
    const std::vector<uint64_t> chain = ChainTo(truth, blocks[q]);
    v1::MatchRequest request;
    request.set_model(truth.model);
    for (uint64_t h : chain) request.add_block_hashes(h);
    std::vector<v1::MatchResponse> answers;
    for (int i = 0; i < kReplicas; ++i) {
      absl::StatusOr<v1::MatchResponse> answer = clients[i]->Match(request);
      ASSERT_TRUE(answer.ok()) << answer.status();
      answers.push_back(*std::move(answer));
    }
    for (int i = 1; i < kReplicas; ++i) {
      ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(answers[0], answers[i]))
          << "replica " << i << " differs on a " << chain.size() << "-block chain:\n"
          << answers[0].DebugString() << "\nvs\n"
          << answers[i].DebugString();
    }
    const auto expected = Expected(truth, chain);
    ASSERT_EQ(static_cast<size_t>(answers[0].pods_size()), expected.size()) << answers[0].DebugString();
    for (const v1::PodMatch& match : answers[0].pods()) {
      auto it = expected.find({match.pod(), match.dp_rank()});
      ASSERT_NE(it, expected.end()) << match.DebugString();
      EXPECT_EQ(match.matched_blocks(), it->second.first) << match.pod();
      EXPECT_EQ(match.matched_tokens(), it->second.first * truth.block_size);
      const std::map<std::string, uint32_t> media(match.blocks_by_medium().begin(), match.blocks_by_medium().end());
      EXPECT_EQ(media, it->second.second) << match.pod();
      partial += it->second.first < chain.size() ? 1 : 0;
    }
    ++queries;
  }
  EXPECT_GT(queries, 50u);
  EXPECT_GT(partial, 0u) << "no query matched some worker only partly: the workload is too easy";

  // Token queries: the simulator's sample prompts and the workers it says hold them.
  size_t cached = 0;
  for (const auto& prompt : prompts["prompts"]) {
    v1::MatchRequest request;
    request.set_model(prompts["model"].get<std::string>());
    for (uint32_t t : prompt["tokens"]) request.add_token_ids(t);
    std::vector<v1::MatchResponse> answers;
    for (int i = 0; i < kReplicas; ++i) {
      absl::StatusOr<v1::MatchResponse> answer = clients[i]->Match(request);
      ASSERT_TRUE(answer.ok()) << answer.status();
      answers.push_back(*std::move(answer));
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(answers[0], answers[i]))
          << prompt["label"] << ": replica " << i << " differs";
    }
    std::map<std::pair<std::string, uint32_t>, uint32_t> expected, got;
    for (const auto& e : prompt["expected"]) expected[{e["pod"], e["dp_rank"]}] = e["matched_blocks"];
    for (const v1::PodMatch& m : answers[0].pods()) got[{m.pod(), m.dp_rank()}] = m.matched_blocks();
    EXPECT_EQ(got, expected) << prompt["label"];
    cached += expected.empty() ? 0 : 1;
  }
  EXPECT_GT(cached, 0u);

  (*sim)->Signal(SIGTERM);
  EXPECT_EQ((*sim)->Wait(absl::Seconds(20)), 0) << (*sim)->Stderr();
  for (ServerProcess& replica : replicas) {
    replica.process->Signal(SIGTERM);
    EXPECT_EQ(replica.process->Wait(absl::Seconds(10)), 0) << replica.process->Stderr();
  }
}

}  // namespace
}  // namespace kvindex::testing
