#pragma once

// Real kvindex-server and kvindex-sim processes on 127.0.0.1 for the
// benchmarks: started from the build's bin directory on ephemeral ports, and
// the pods of a simulator pushed to a server over SyncPods.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/kvindex_client.h"
#include "kvindex/v1/kvindex.pb.h"
#include "tools/bench/child_process.h"

namespace kvindex::bench {

struct ServerChild {
  std::unique_ptr<ChildProcess> process;
  std::string address;          // "127.0.0.1:port"
  std::string metrics_address;  // of its /metrics; empty when `args` turned it off
};

// Starts `bin_dir`/kvindex-server --listen=127.0.0.1:0
// --metrics_listen=127.0.0.1:0 plus `args`, and waits (up to 30 s) for the log
// lines that name its ports.
[[nodiscard]] absl::StatusOr<ServerChild> StartServer(const std::string& bin_dir, const std::vector<std::string>& args);

struct SimChild {
  std::unique_ptr<ChildProcess> process;
  std::string pods_file;     // the PodSnapshot text the simulator wrote once bound
  std::string prompts_file;  // empty unless asked for
};

// Starts `bin_dir`/kvindex-sim --base_port=0 --pods_file=<dir>/pods.textproto
// (plus --prompts_file=<dir>/prompts.json when `prompts`) plus `args`, and
// waits (up to 30 s) for the pods file. `dir` must exist and outlive the child.
[[nodiscard]] absl::StatusOr<SimChild> StartSim(const std::string& bin_dir, const std::string& dir, const std::string& name,
                                  const std::vector<std::string>& args, bool prompts);

// Waits until `path` exists and is not empty, or `timeout`; false when it does not appear.
bool WaitForFile(const std::string& path, absl::Duration timeout);

// Parses a kvindex.v1.PodSnapshot in protobuf text format from `path`.
[[nodiscard]] absl::StatusOr<v1::PodSnapshot> ReadPodSnapshot(const std::string& path);

// Replaces the server's pods with `snapshot` (one SyncPods snapshot update);
// FAILED_PRECONDITION when a pod is rejected.
[[nodiscard]] absl::Status ApplySnapshot(client::KvIndexClient& client, const v1::PodSnapshot& snapshot);

// Waits until every worker of the named pods has applied at least one batch
// (ListPods last_seq >= 0), or `timeout`. DEADLINE_EXCEEDED names the laggards.
[[nodiscard]] absl::Status WaitForWorkersLive(client::KvIndexClient& client, const std::vector<std::string>& pod_keys,
                                absl::Duration timeout);

// Splits a flag value holding several command-line words ("--a=1 --b=2").
std::vector<std::string> SplitArgs(const std::string& text);

}  // namespace kvindex::bench
