#pragma once

// A real kvindex-server process for end-to-end tests, on a port it picks.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/server/subprocess.h"

namespace kvindex::testing {

// Built binaries (KVINDEX_BIN_DIR is set by tests/CMakeLists.txt).
std::string BinPath(const std::string& name);

struct ServerProcess {
  std::unique_ptr<Subprocess> process;
  int port = 0;
  std::string address;  // "127.0.0.1:port"
};

// Starts kvindex-server --listen=127.0.0.1:0 --metrics_listen= plus `args`,
// and waits (up to 20 s) for its "listening on" line to learn the port.
// The process's stderr is in the error when it does not come up.
absl::StatusOr<ServerProcess> StartServerProcess(std::vector<std::string> args,
                                                 std::vector<std::pair<std::string, std::string>> env = {});

// The metrics port a kvindex-server process started with
// --metrics_listen=127.0.0.1:0 logged (waits up to 10 s for the line); 0 when none.
int MetricsPortOf(const ServerProcess& server);

}  // namespace kvindex::testing
