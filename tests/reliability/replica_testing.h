#pragma once

// What the snapshot and bootstrap tests share (tests/reliability): a scratch
// directory, their engines' flags, and the server steps they repeat.

#include <string>
#include <vector>

#include "client/kvindex_client.h"
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

}  // namespace kvindex::testing
