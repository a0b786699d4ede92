// Bootstrap from a peer end to end (issue 17 item 3, README "Bootstrap from a
// peer"), with real kvindex-server and kvindex-sim processes: an engine whose
// replay buffer holds 30 batches publishes 160; replica A follows it from the
// start. Replica B, started afterwards with --bootstrap_from=A and nothing
// pushed, answers exactly the engine's cache (the simulator's ground truth) as
// soon as it serves — no replay can have given it the first 130 batches —
// with every worker complete. Replica C, started with neither, says its
// workers are incomplete. A bootstrap the peer refuses (another token) or
// that finds no peer is one log line and a cold start.

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/kvindex_client.h"
#include "gtest/gtest.h"
#include "tests/reliability/replica_testing.h"
#include "tests/reliability/sim_process.h"
#include "tests/server/server_process.h"
#include "tests/testing/clients.h"
#include "tests/testing/dead_port.h"
#include "tests/testing/pods.h"
#include "tests/testing/wait.h"

namespace kvindex::testing {
namespace {

using ::kvindex::testutil::Connect;
using ::kvindex::testutil::SnapshotUpdate;

client::ClientOptions WithToken(const std::string& token) {
  client::ClientOptions options;
  options.token = token;
  options.timeout = absl::Seconds(30);
  return options;
}

TEST(BootstrapReplicaTest, AReplicaBootstrappedFromAPeerAnswersTheWholeCacheAtOnce) {
  TempDir dir;
  const std::string token_file = dir.File("token", "bootstrap-token\n");
  const std::string other_token_file = dir.File("other", "another-token\n");
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      MixedEngineArgs({"--pods=2", "--base_port=0", "--seed=18", "--rate=15", "--requests=160", "--replay_buffer=30"}));
  ASSERT_TRUE(sim.ok()) << sim.status();

  // A follows the engines from their first batch; it has a token, which
  // guards ExportIndex (not Match or GetStats: no --auth_all_rpcs).
  absl::StatusOr<ServerProcess> a = StartServerProcess({absl::StrCat("--auth_token_file=", token_file)});
  ASSERT_TRUE(a.ok()) << a.status();
  std::unique_ptr<client::KvIndexClient> a_client = Connect(a->address, WithToken("bootstrap-token"));
  ASSERT_NE(a_client, nullptr);
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = a_client->SyncPods({SnapshotUpdate((*sim)->pods())});
  ASSERT_TRUE(acks.ok()) << acks.status();
  SimTruth sim_truth;
  ASSERT_NO_FATAL_FAILURE(TakeTruth(**sim, sim_truth));
  const nlohmann::json* truth = &sim_truth.truth;
  const nlohmann::json* prompts = &sim_truth.prompts;
  for (const auto& pod : (*truth)["pods"]) {
    for (const auto& worker : pod["workers"]) EXPECT_GE(worker["last_seq"].get<int64_t>(), 159);
  }
  absl::Status caught_up = WaitForCatchUp(*a_client, *truth, absl::Seconds(30));
  ASSERT_TRUE(caught_up.ok()) << caught_up << "\n" << a->process->Stderr();
  absl::StatusOr<v1::GetStatsResponse> a_stats = a_client->GetStats();
  ASSERT_TRUE(a_stats.ok()) << a_stats.status();
  EXPECT_EQ(a_stats->incomplete_workers(), 0u);

  // B: same token file, bootstraps from A, nothing pushed. It serves only once
  // the bootstrap is done, so its very first answers are compared.
  const absl::Time started = absl::Now();
  absl::StatusOr<ServerProcess> b = StartServerProcess(
      {absl::StrCat("--auth_token_file=", token_file), absl::StrCat("--bootstrap_from=", a->address)});
  ASSERT_TRUE(b.ok()) << b.status();
  std::unique_ptr<client::KvIndexClient> b_client = Connect(b->address, WithToken("bootstrap-token"));
  ASSERT_NE(b_client, nullptr);
  absl::StatusOr<TruthComparison> same = CompareWithTruth(*b_client, *truth, *prompts);
  ASSERT_TRUE(same.ok()) << same.status() << "\n" << b->process->Stderr();
  std::printf("B equal to the truth %s after it was started: %zu workers, %zu blocks (%zu on CPU), %zu chains, "
              "%zu prompts\n",
              absl::FormatDuration(absl::Now() - started).c_str(), same->workers, same->blocks, same->cpu_blocks,
              same->chains, same->prompts);
  EXPECT_GT(same->blocks, 0u);
  EXPECT_GT(same->cpu_blocks, 0u);
  absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> workers = Workers(*b_client);
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->size(), 2u);
  for (const auto& [name, info] : *workers) {
    EXPECT_TRUE(info.history_complete()) << name;
    EXPECT_EQ(info.uncovered_gaps(), 0u) << name;
    EXPECT_EQ(info.restarts(), 0u) << name;
    EXPECT_LT(info.batches(), 30u) << name << ": B applied more batches than any replay could give it";
  }
  EXPECT_TRUE(absl::StrContains(b->process->Stderr(), "bootstrapped from")) << b->process->Stderr();
  EXPECT_TRUE(absl::StrContains(a->process->Stderr(), "ExportIndex to")) << a->process->Stderr();
  // Still equal once B follows the engines itself.
  caught_up = WaitForCatchUp(*b_client, *truth, absl::Seconds(30));
  ASSERT_TRUE(caught_up.ok()) << caught_up << "\n" << b->process->Stderr();
  same = CompareWithTruth(*b_client, *truth, *prompts);
  ASSERT_TRUE(same.ok()) << same.status() << "\n" << b->process->Stderr();
  absl::StatusOr<v1::GetStatsResponse> b_stats = b_client->GetStats();
  ASSERT_TRUE(b_stats.ok()) << b_stats.status();
  EXPECT_EQ(b_stats->incomplete_workers(), 0u);

  // C: neither bootstrap nor snapshot; it can only say what it lacks.
  absl::StatusOr<ServerProcess> c = StartServerProcess({});
  ASSERT_TRUE(c.ok()) << c.status();
  std::unique_ptr<client::KvIndexClient> c_client = Connect(c->address, absl::Seconds(30));
  ASSERT_NE(c_client, nullptr);
  acks = c_client->SyncPods({SnapshotUpdate((*sim)->pods())});
  ASSERT_TRUE(acks.ok()) << acks.status();
  ASSERT_TRUE(WaitForCatchUp(*c_client, *truth, absl::Seconds(30)).ok());
  absl::StatusOr<v1::GetStatsResponse> c_stats = c_client->GetStats();
  ASSERT_TRUE(c_stats.ok()) << c_stats.status();
  EXPECT_EQ(c_stats->incomplete_workers(), 2u);

  // D: another token; A refuses the export and D starts cold.
  absl::StatusOr<ServerProcess> d = StartServerProcess(
      {absl::StrCat("--auth_token_file=", other_token_file), absl::StrCat("--bootstrap_from=", a->address)});
  ASSERT_TRUE(d.ok()) << d.status();
  std::unique_ptr<client::KvIndexClient> d_client = Connect(d->address, absl::Seconds(30));
  ASSERT_NE(d_client, nullptr);
  absl::StatusOr<v1::GetStatsResponse> d_stats = d_client->GetStats();
  ASSERT_TRUE(d_stats.ok()) << d_stats.status();
  EXPECT_EQ(d_stats->pods(), 0u);
  EXPECT_EQ(d_stats->workers(), 0u);
  EXPECT_TRUE(absl::StrContains(d->process->Stderr(), "failed (unauthenticated)")) << d->process->Stderr();
}

TEST(BootstrapReplicaTest, NoPeerIsAColdStart) {
  absl::StatusOr<std::unique_ptr<testutil::DeadPort>> dead = testutil::DeadPort::Bind();
  ASSERT_TRUE(dead.ok()) << dead.status();
  absl::StatusOr<ServerProcess> server =
      StartServerProcess({absl::StrCat("--bootstrap_from=127.0.0.1:", (*dead)->port())});
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::KvIndexClient> client = Connect(server->address, absl::Seconds(30));
  ASSERT_NE(client, nullptr);
  absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->workers(), 0u);
  EXPECT_TRUE(absl::StrContains(server->process->Stderr(), "failed (unreachable)")) << server->process->Stderr();
}

}  // namespace
}  // namespace kvindex::testing
