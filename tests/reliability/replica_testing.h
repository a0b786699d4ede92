#pragma once

// What the snapshot and bootstrap tests share (tests/reliability): a scratch
// directory, their engines' flags, and the server steps they repeat.

#include <string>
#include <vector>

#include <memory>

#include "client/kvindex_client.h"
#include "nlohmann/json.hpp"
#include "tests/reliability/sim_process.h"
#include "tests/server/server_process.h"

namespace kvindex::testing {

// A fresh directory under /tmp, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // A file of this directory holding `contents`; its path.
  std::string File(const std::string& name, const std::string& contents) const;

 private:
  std::string path_;
};

// kvindex-sim flags of the engines these tests follow: mixed layouts and
// hashes, a CPU tier, a Mamba hybrid, images and salted tenants; plus `extra`.
std::vector<std::string> MixedEngineArgs(std::vector<std::string> extra);

// Every one of `workers` workers of the server has applied at least `seq`.
bool AllAtLeast(client::KvIndexClient& client, size_t workers, int64_t seq);

// SIGTERM, and the server exits 0 within 5 s (killed otherwise). Fails the test otherwise.
void StopWithSigterm(ServerProcess& server);

// A simulator's truth and sample prompts once its traffic is over.
struct SimTruth {
  nlohmann::json truth;
  nlohmann::json prompts;
};
// Waits (up to 60 s) for `sim`'s traffic to end and reads its truth into
// `out`. Fails the test otherwise.
void TakeTruth(SimProcess& sim, SimTruth& out);

// A kvindex-server started with `args`, its client, and how it compared with a truth.
struct CheckedServer {
  ServerProcess server;
  std::unique_ptr<client::KvIndexClient> client;
  TruthComparison same;
};
// Starts kvindex-server with `args`, waits (up to 30 s) until it has caught up
// with `truth` and checks it is equal to it (CompareWithTruth). Fails the test
// (with the server's log) otherwise.
void StartEqualToTheTruth(const std::vector<std::string>& args, const SimTruth& truth, CheckedServer& out);

}  // namespace kvindex::testing
