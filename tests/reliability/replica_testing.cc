#include "tests/reliability/replica_testing.h"

#include <signal.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>

#include "gtest/gtest.h"
#include "tests/testing/clients.h"
#include "tests/reliability/sim_process.h"

namespace kvindex::testing {

TempDir::TempDir() {
  char tmpl[] = "/tmp/kvindex-replica-test-XXXXXX";
  if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  EXPECT_FALSE(path_.empty()) << "mkdtemp failed";
}

TempDir::~TempDir() {
  std::error_code ignored;
  if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::File(const std::string& name, const std::string& contents) const {
  const std::string path = path_ + "/" + name;
  std::ofstream(path) << contents;
  return path;
}

std::vector<std::string> MixedEngineArgs(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--ip=127.0.0.1",      "--block_size=16",         "--capacity_blocks=64",
                                   "--cpu_capacity_blocks=64", "--layout=mixed",   "--hash=mixed",
                                   "--replay_form=mixed", "--system_prompts=2",      "--system_prompt_tokens=64",
                                   "--conversations=4",   "--turn_tokens=64",        "--keep_running",
                                   "--hybrid=none,mamba", "--offload_chunk_blocks=0,2", "--mm_fraction=0.25",
                                   "--salted_tenants=1"};
  args.insert(args.end(), std::make_move_iterator(extra.begin()), std::make_move_iterator(extra.end()));
  return args;
}

bool AllAtLeast(client::KvIndexClient& client, size_t workers, int64_t seq) {
  absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> w = Workers(client);
  if (!w.ok() || w->size() != workers) return false;
  for (const auto& [name, info] : *w) {
    if (info.last_seq() < seq) return false;
  }
  return true;
}

void StopWithSigterm(ServerProcess& server) {
  ASSERT_TRUE(server.process->Signal(SIGTERM));
  const std::optional<int> exit_code = server.process->Wait(absl::Seconds(5));
  if (!exit_code.has_value()) server.process->Signal(SIGKILL);
  ASSERT_TRUE(exit_code.has_value()) << "kvindex-server did not stop within 5 s\n" << server.process->Stderr();
  EXPECT_EQ(*exit_code, 0) << server.process->Stderr();
}

void TakeTruth(SimProcess& sim, SimTruth& out) {
  absl::Status done = sim.WaitTrafficDone(absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done << "\n" << sim.process().Stderr();
  absl::StatusOr<nlohmann::json> truth = sim.Truth();
  absl::StatusOr<nlohmann::json> prompts = sim.Prompts();
  ASSERT_TRUE(truth.ok() && prompts.ok());
  out = SimTruth{*std::move(truth), *std::move(prompts)};
}

void StartEqualToTheTruth(const std::vector<std::string>& args, const SimTruth& truth, CheckedServer& out) {
  absl::StatusOr<ServerProcess> server = StartServerProcess(args);
  ASSERT_TRUE(server.ok()) << server.status();
  out.server = *std::move(server);
  out.client = testutil::Connect(out.server.address, absl::Seconds(30));
  ASSERT_NE(out.client, nullptr);
  absl::Status caught_up = WaitForCatchUp(*out.client, truth.truth, absl::Seconds(30));
  ASSERT_TRUE(caught_up.ok()) << caught_up << "\n" << out.server.process->Stderr();
  absl::StatusOr<TruthComparison> same = CompareWithTruth(*out.client, truth.truth, truth.prompts);
  ASSERT_TRUE(same.ok()) << same.status() << "\n" << out.server.process->Stderr();
  out.same = *same;
}

}  // namespace kvindex::testing
