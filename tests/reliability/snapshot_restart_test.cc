// Snapshots end to end (issue 17, README "Snapshots"), with real
// kvindex-server and kvindex-sim processes: an engine whose replay buffer
// holds 30 batches publishes 160; server A (--snapshot_dir) follows it,
// is stopped with SIGTERM after about 150 and restarted after the engine's
// last 10: it answers exactly the engine's cache (the simulator's ground
// truth), every worker complete, without the control plane pushing anything
// again. A server started cold beside it can only say its workers are
// incomplete; a damaged snapshot is refused and the server starts cold.

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
#include "tests/testing/pods.h"
#include "tests/testing/wait.h"

namespace kvindex::testing {
namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(20);

using ::kvindex::testutil::Connect;
using ::kvindex::testutil::SnapshotUpdate;
using ::kvindex::testutil::WaitFor;

void Push(client::KvIndexClient& client, const v1::PodSnapshot& pods) {
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client.SyncPods({SnapshotUpdate(pods)});
  ASSERT_TRUE(acks.ok()) << acks.status();
  for (const v1::PodAck& ack : (*acks)[0].pods()) {
    EXPECT_EQ(ack.outcome(), v1::POD_OUTCOME_SUBSCRIBED) << ack.pod() << ": " << ack.reason();
  }
}

TEST(SnapshotRestartTest, ARestartedServerAnswersTheEnginesWholeCacheAtOnce) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      MixedEngineArgs({"--pods=2", "--base_port=0", "--seed=17", "--rate=15", "--requests=160", "--replay_buffer=30"}));
  ASSERT_TRUE(sim.ok()) << sim.status();
  const std::vector<std::string> args = {absl::StrCat("--snapshot_dir=", dir.path()), "--snapshot_interval=1s"};
  absl::StatusOr<ServerProcess> a = StartServerProcess(args);
  ASSERT_TRUE(a.ok()) << a.status();
  std::unique_ptr<client::KvIndexClient> client = Connect(a->address, absl::Seconds(30));
  ASSERT_NE(client, nullptr);
  ASSERT_NO_FATAL_FAILURE(Push(*client, (*sim)->pods()));
  ASSERT_TRUE(WaitFor([&] { return AllAtLeast(*client, 2, 149); }, absl::Seconds(60), kPoll))
      << a->process->Stderr();
  // Followed from the start: nothing missing.
  absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->incomplete_workers(), 0u);

  const absl::Time signalled = absl::Now();
  ASSERT_NO_FATAL_FAILURE(StopWithSigterm(*a));
  std::printf("server A stopped %s after SIGTERM\n", absl::FormatDuration(absl::Now() - signalled).c_str());
  EXPECT_TRUE(absl::StrContains(a->process->Stderr(), "snapshot at shutdown:")) << a->process->Stderr();
  client.reset();

  // The engine goes on without A: its last batches are in its replay buffer, its first ones long gone.
  SimTruth truth;
  ASSERT_NO_FATAL_FAILURE(TakeTruth(**sim, truth));
  for (const auto& pod : truth.truth["pods"]) {
    for (const auto& worker : pod["workers"]) EXPECT_GE(worker["last_seq"].get<int64_t>(), 159);
  }

  // A again, on its snapshot: no pods pushed, the whole cache known at once.
  const absl::Time restarted = absl::Now();
  CheckedServer again;
  ASSERT_NO_FATAL_FAILURE(StartEqualToTheTruth(args, truth, again));
  client = std::move(again.client);
  std::printf("restarted server caught up and compared %s after it was started\n",
              absl::FormatDuration(absl::Now() - restarted).c_str());
  const TruthComparison* same = &again.same;
  std::printf("compared with the truth: %zu workers, %zu blocks held (%zu on CPU), %zu chains, %zu prompts\n",
              same->workers, same->blocks, same->cpu_blocks, same->chains, same->prompts);
  EXPECT_GT(same->blocks, 0u);
  EXPECT_GT(same->cpu_blocks, 0u);
  absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> workers = Workers(*client);
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->size(), 2u);
  for (const auto& [name, info] : *workers) {
    EXPECT_TRUE(info.history_complete()) << name;
    EXPECT_EQ(info.uncovered_gaps(), 0u) << name;
    EXPECT_EQ(info.restarts(), 0u) << name;
    EXPECT_GE(info.replays_ok(), 1u) << name;  // the batches published while A was down
    EXPECT_LT(info.batches(), 30u) << name << ": more than the missed batches were applied";
  }
  EXPECT_TRUE(absl::StrContains(again.server.process->Stderr(), "snapshot loaded from"))
      << again.server.process->Stderr();

  // Without the snapshot, a server can only know the buffer's last 30 batches, and says so.
  absl::StatusOr<ServerProcess> cold = StartServerProcess({});
  ASSERT_TRUE(cold.ok()) << cold.status();
  std::unique_ptr<client::KvIndexClient> cold_client = Connect(cold->address, absl::Seconds(30));
  ASSERT_NE(cold_client, nullptr);
  ASSERT_NO_FATAL_FAILURE(Push(*cold_client, (*sim)->pods()));
  ASSERT_TRUE(WaitForCatchUp(*cold_client, truth.truth, absl::Seconds(30)).ok());
  absl::StatusOr<v1::GetStatsResponse> cold_stats = cold_client->GetStats();
  ASSERT_TRUE(cold_stats.ok()) << cold_stats.status();
  EXPECT_EQ(cold_stats->incomplete_workers(), 2u);
}

// README's old known limit: an engine that restarts while kvindex is down and
// publishes more batches than its previous incarnation. Resuming after the
// saved seq would keep the old incarnation's blocks; the saved batch's digest
// tells the new incarnation apart (issue 17 item 4): the worker is cleared and
// replayed from 0, exactly the new engine's cache.
TEST(SnapshotRestartTest, AnEngineThatRestartedPastTheSavedSeqWhileTheServerWasDownIsDetected) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<SimProcess>> first = SimProcess::Start(
      MixedEngineArgs({"--pods=1", "--base_port=0", "--seed=18", "--rate=40", "--requests=40", "--replay_buffer=1000"}));
  ASSERT_TRUE(first.ok()) << first.status();
  const std::vector<std::string> args = {absl::StrCat("--snapshot_dir=", dir.path()), "--snapshot_interval=1h"};
  absl::StatusOr<ServerProcess> a = StartServerProcess(args);
  ASSERT_TRUE(a.ok()) << a.status();
  std::unique_ptr<client::KvIndexClient> client = Connect(a->address, absl::Seconds(30));
  ASSERT_NE(client, nullptr);
  ASSERT_NO_FATAL_FAILURE(Push(*client, (*first)->pods()));
  ASSERT_TRUE((*first)->WaitTrafficDone(absl::Seconds(60)).ok());
  ASSERT_TRUE(WaitFor([&] { return AllAtLeast(*client, 1, 39); }, absl::Seconds(60), kPoll)) << a->process->Stderr();
  ASSERT_NO_FATAL_FAILURE(StopWithSigterm(*a));
  client.reset();

  // The engine restarts on the same ports with another workload and publishes 80 batches: seq 39 again, another batch.
  const std::string same_ports = (*first)->SamePortsFlag();
  first->reset();
  absl::StatusOr<std::unique_ptr<SimProcess>> second = SimProcess::Start(
      MixedEngineArgs({"--pods=1", same_ports, "--seed=19", "--rate=80", "--requests=80", "--replay_buffer=1000"}));
  ASSERT_TRUE(second.ok()) << second.status();
  SimTruth truth;
  ASSERT_NO_FATAL_FAILURE(TakeTruth(**second, truth));

  CheckedServer again;
  ASSERT_NO_FATAL_FAILURE(StartEqualToTheTruth(args, truth, again));
  EXPECT_GT(again.same.blocks, 0u);
  absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> workers = Workers(*again.client);
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_EQ((*workers)[0].second.restarts(), 1u);
  EXPECT_TRUE((*workers)[0].second.history_complete());
}

// A crash: no snapshot at shutdown, only the periodic one. The restarted
// server resumes from it and replays what came after; still exact.
TEST(SnapshotRestartTest, AKilledServerResumesFromItsLastPeriodicSnapshot) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      MixedEngineArgs({"--pods=2", "--base_port=0", "--seed=20", "--rate=15", "--requests=120", "--replay_buffer=60"}));
  ASSERT_TRUE(sim.ok()) << sim.status();
  const std::vector<std::string> args = {absl::StrCat("--snapshot_dir=", dir.path()), "--snapshot_interval=200ms"};
  absl::StatusOr<ServerProcess> a = StartServerProcess(args);
  ASSERT_TRUE(a.ok()) << a.status();
  std::unique_ptr<client::KvIndexClient> client = Connect(a->address, absl::Seconds(30));
  ASSERT_NE(client, nullptr);
  ASSERT_NO_FATAL_FAILURE(Push(*client, (*sim)->pods()));
  ASSERT_TRUE(WaitFor([&] { return AllAtLeast(*client, 2, 70); }, absl::Seconds(60), kPoll)) << a->process->Stderr();
  absl::SleepFor(absl::Milliseconds(500));  // at least one periodic snapshot after seq 70
  ASSERT_TRUE(a->process->Signal(SIGKILL));
  ASSERT_TRUE(a->process->Wait(absl::Seconds(5)).has_value());
  client.reset();

  SimTruth truth;
  ASSERT_NO_FATAL_FAILURE(TakeTruth(**sim, truth));

  CheckedServer again;
  ASSERT_NO_FATAL_FAILURE(StartEqualToTheTruth(args, truth, again));
  absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> workers = Workers(*again.client);
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->size(), 2u);
  for (const auto& [name, info] : *workers) {
    EXPECT_TRUE(info.history_complete()) << name;  // the buffer (60) still held what the snapshot lacked
    EXPECT_EQ(info.restarts(), 0u) << name;
    EXPECT_EQ(info.uncovered_gaps(), 0u) << name;
    EXPECT_LT(info.batches(), 60u) << name << ": resumed from the snapshot, not replayed from 0";
  }
}

TEST(SnapshotRestartTest, ADamagedSnapshotIsRefusedAndTheServerStartsCold) {
  TempDir dir;
  {
    std::ofstream out(dir.path() + "/kvindex.snapshot", std::ios::binary);
    // This format's header (version 1, 32 bytes, a 4-byte body), a checksum the body does not have.
    out << "KVIXSNAP" << std::string("\x01\0\0\0\x20\0\0\0\x04\0\0\0\0\0\0\0", 16) << std::string(8, '\x55')
        << "body";
  }
  absl::StatusOr<ServerProcess> server = StartServerProcess({absl::StrCat("--snapshot_dir=", dir.path())});
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::KvIndexClient> client = Connect(server->address, absl::Seconds(30));
  ASSERT_NE(client, nullptr);
  absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pods(), 0u);
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(server->process->Stderr(), "refused (corrupt)"); },
                      absl::Seconds(10), kPoll))
      << server->process->Stderr();
}

}  // namespace
}  // namespace kvindex::testing
