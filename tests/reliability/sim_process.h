#pragma once

// Helpers of the fault-injection, memory and soak tests: a real kvindex-sim
// process (simulated engines with ground truth) and the comparison of a real
// kvindex-server's answers with that truth.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/kvindex_client.h"
#include "kvindex/v1/kvindex.pb.h"
#include "nlohmann/json.hpp"
#include "tests/server/subprocess.h"

namespace kvindex::testing {

// A kvindex-sim process writing its pods, truth and prompts files into a
// fresh temporary directory (removed with the object).
//
// Ports: run it with --base_port=0 (every socket on a port the kernel picks)
// and use the ports it reports (pods(), SamePortsFlag()), never a port probed
// free beforehand: another test may take it in between. A dead endpoint is a
// testutil::DeadPort (tests/testing/dead_port.h).
class SimProcess {
 public:
  // Starts kvindex-sim with `args` plus --truth_file/--prompts_file/--pods_file
  // (--truth_interval=200ms unless `args` says otherwise) and waits (up to
  // 30 s) for the first truth file, which names the pods and their ports.
  // With `read_pods` false it waits only for the pods file (written once the
  // sockets are bound, whatever --truth_interval), and pods() comes from it.
  static absl::StatusOr<std::unique_ptr<SimProcess>> Start(std::vector<std::string> args, bool read_pods = true);
  ~SimProcess();

  // The sim's pods with the ports it bound, as its truth (or pods) file describes them.
  const v1::PodSnapshot& pods() const { return pods_; }
  Subprocess& process() { return *process_; }

  // The pods file kvindex-sim wrote (--pods_file), for `kvindex pods apply -f`.
  std::string PodsFile() const { return dir_ + "/pods.textproto"; }

  // "--ports=..." naming every engine's bound ports: a kvindex-sim started
  // with it (after this one is gone) restarts the same engines on the same ports.
  std::string SamePortsFlag() const;

  // Waits until the sim logs that its traffic is done (run it with --keep_running).
  absl::Status WaitTrafficDone(absl::Duration timeout);

  // The latest truth and prompts documents (see tools/sim/truth_writer.h),
  // written after the traffic ended when WaitTrafficDone() returned OK.
  absl::StatusOr<nlohmann::json> Truth() const;
  absl::StatusOr<nlohmann::json> Prompts() const;

 private:
  SimProcess() = default;
  std::string dir_;
  std::unique_ptr<Subprocess> process_;
  v1::PodSnapshot pods_;
  std::vector<std::pair<uint32_t, uint32_t>> engine_ports_;  // (events, replay or 0) per engine, in the sim's order
};

// Waits until the server has applied, for every worker of `truth`, the engine's
// last seq (and is not replaying); FAILED_PRECONDITION with the laggards' state
// after `timeout`.
absl::Status WaitForCatchUp(client::KvIndexClient& client, const nlohmann::json& truth, absl::Duration timeout);

// What CompareWithTruth looked at, for tests to check their workload
// exercised what they meant to (CPU blocks, partial matches, cached prompts).
struct TruthComparison {
  size_t workers = 0;          // followed workers
  size_t blocks = 0;           // blocks they hold (any tier)
  size_t cpu_blocks = 0;       // of which on CPU
  size_t chains = 0;           // distinct held chains matched
  size_t partial_matches = 0;  // workers credited with only part of a chain
  size_t hybrid_cuts = 0;      // (chain, hybrid worker) pairs vLLM's group-1 rule shortened
  size_t prompts = 0;
  size_t prompt_matches = 0;   // (prompt, worker) pairs the truth expects
};

// Compares the server with the simulator's ground truth ("equal to the truth",
// README "Guarantees"), for the pods of `truth` whose key is in `only_pods`
// (every pod when empty), after the traffic stopped and WaitForCatchUp:
//  - the server follows exactly the truth's workers of those pods; each holds
//    as many blocks as its engine, per tier (blocks_by_medium) and in all;
//    no other worker holds a block, and GetStats' entries are their sum;
//  - Match of every held chain (block hashes from block 0 to a leaf of any
//    followed worker) names exactly the followed workers holding its block 0,
//    each with its leading held blocks, tokens and blocks per tier;
//  - Match of each prompt of `prompts` names exactly the expected followed
//    workers with their matched blocks, tokens and blocks per tier.
// The counts looked at, or FAILED_PRECONDITION listing the first differences
// (or the error of a call that failed).
absl::StatusOr<TruthComparison> CompareWithTruth(client::KvIndexClient& client, const nlohmann::json& truth,
                                                 const nlohmann::json& prompts,
                                                 const std::vector<std::string>& only_pods = {});

// Per-worker status of the server, keyed "namespace/name#rank".
absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> Workers(client::KvIndexClient& client);

}  // namespace kvindex::testing
