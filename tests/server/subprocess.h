#pragma once

// Subprocess: a child process for end-to-end tests (kvindex-server, the
// kvindex CLI, python3), its stdout and stderr captured to files. The child
// gets SIGKILL when the thread that started it exits (PR_SET_PDEATHSIG), so a
// test killed by ctest's timeout leaves no servers or simulators behind.
//
// Thread safety: one thread at a time per Subprocess.

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvindex::testing {

class Subprocess {
 public:
  // Starts argv[0] (a path) with `argv`, the environment plus `env` (NAME,
  // value pairs that override), stdin from /dev/null, stdout/stderr to files.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      std::vector<std::string> argv, std::vector<std::pair<std::string, std::string>> env = {});

  // Kills (SIGKILL) and reaps the child if it still runs; removes the output files.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // Sends `signal`; false when the child is already reaped.
  bool Signal(int signal);

  // Waits up to `timeout` for the child to exit. Its exit code, 128 + signal
  // number when a signal ended it, nullopt when still running.
  std::optional<int> Wait(absl::Duration timeout);

  // What the child wrote so far.
  std::string Stdout() const;
  std::string Stderr() const;

 private:
  Subprocess(pid_t pid, std::string out_path, std::string err_path);

  pid_t pid_;
  std::optional<int> exit_code_;
  std::string out_path_;
  std::string err_path_;
};

struct CommandResult {
  int exit_code = -1;  // -1: timed out (the child was killed)
  std::string out;
  std::string err;
};

// Runs a command to completion (killed after `timeout`).
CommandResult RunCommand(std::vector<std::string> argv, absl::Duration timeout = absl::Seconds(60),
                         std::vector<std::pair<std::string, std::string>> env = {});

// Writes `contents` to a new file under the test temp dir; returns its path.
std::string WriteTempFile(const std::string& name, const std::string& contents);

// A new, empty directory under the test temp dir; removed, with everything in
// it, on destruction.
class TempDirectory {
 public:
  explicit TempDirectory(const std::string& name);
  ~TempDirectory();
  TempDirectory(const TempDirectory&) = delete;
  TempDirectory& operator=(const TempDirectory&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kvindex::testing
