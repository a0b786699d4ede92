#pragma once

// ChildProcess: a process the benchmarks start (kvindex-server, kvindex-sim),
// its stdout and stderr captured to files in a private temporary directory.
// The child gets SIGTERM if this process dies (PR_SET_PDEATHSIG), so a killed
// benchmark leaves nothing running; the destructor stops and reaps it.
//
// Thread safety: one thread at a time per ChildProcess.

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvindex::bench {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with `argv`; stdin from /dev/null, stdout and
  // stderr to files. `name` labels the files and messages.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(std::string name, std::vector<std::string> argv);

  // Stop(): SIGTERM, then SIGKILL after 5 s; removes the output files.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // Sends SIGTERM, waits up to `grace`, then SIGKILL. Returns the exit code
  // (128 + signal when a signal ended it). Idempotent.
  int Stop(absl::Duration grace = absl::Seconds(5));

  // Waits up to `timeout` for the child to exit. Its exit code (128 + signal),
  // nullopt while it runs.
  std::optional<int> Wait(absl::Duration timeout);

  // What the child wrote so far.
  std::string Stdout() const;
  std::string Stderr() const;
  // Both, for messages (spdlog logs to stdout).
  std::string Log() const { return Stdout() + Stderr(); }

  // User plus system CPU seconds the child has used (from /proc/PID/stat);
  // after it is reaped, the last value read.
  double CpuSeconds();

 private:
  ChildProcess(std::string name, pid_t pid, std::string dir);

  std::string name_;
  pid_t pid_;
  std::string dir_;
  std::optional<int> exit_code_;
  double last_cpu_seconds_ = 0;
};

// User plus system CPU seconds process `pid` has used (/proc/PID/stat); -1 when unreadable.
double ProcessCpuSeconds(pid_t pid);

// Directory of the running executable (where build/bin's other tools are).
std::string SelfBinDir();

// User plus system CPU seconds used by this process so far.
double SelfCpuSeconds();

// Creates a fresh private directory under $TMPDIR (or /tmp).
[[nodiscard]] absl::StatusOr<std::string> MakeTempDir(const std::string& prefix);

// Removes a directory made by MakeTempDir and what is in it.
void RemoveTree(const std::string& dir);

}  // namespace kvindex::bench
