#include "tests/server/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace kvindex::testing {
namespace {

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr && *dir != '\0' ? dir : "/tmp";
}

std::string UniquePath(const std::string& stem) {
  static std::atomic<int> counter{0};
  return absl::StrCat(TempDir(), "/kvindex-test-", getpid(), "-", counter.fetch_add(1), "-", stem);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream data;
  data << in.rdbuf();
  return data.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    std::vector<std::string> argv, std::vector<std::pair<std::string, std::string>> env) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  // The environment: ours, with `env` overriding.
  absl::flat_hash_map<std::string, std::string> vars;
  std::vector<std::string> order;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    if (vars.emplace(entry.substr(0, eq), entry.substr(eq + 1)).second) order.push_back(entry.substr(0, eq));
  }
  for (auto& [name, value] : env) {
    if (vars.insert_or_assign(name, value).second) order.push_back(name);
  }
  std::vector<std::string> env_strings;
  for (const std::string& name : order) env_strings.push_back(absl::StrCat(name, "=", vars[name]));

  std::vector<char*> c_argv;
  for (std::string& arg : argv) c_argv.push_back(arg.data());
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  for (std::string& var : env_strings) c_env.push_back(var.data());
  c_env.push_back(nullptr);

  const std::string stem = argv[0].substr(argv[0].rfind('/') + 1);
  std::string out_path = UniquePath(stem + ".out");
  std::string err_path = UniquePath(stem + ".err");
  const int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const pid_t parent = getpid();
  const pid_t pid = in_fd < 0 || out_fd < 0 || err_fd < 0 ? -1 : fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec. It dies with the test
    // (PR_SET_PDEATHSIG: a test killed by its timeout leaves nothing running),
    // and starts with no blocked signals whatever the test thread blocks.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the test died before prctl
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(127);
    execve(c_argv[0], c_argv.data(), c_env.data());
    _exit(127);
  }
  const int fork_errno = errno;
  for (int fd : {in_fd, out_fd, err_fd}) {
    if (fd >= 0) close(fd);
  }
  if (pid < 0) return absl::InternalError(absl::StrCat("start ", argv[0], ": ", std::strerror(fork_errno)));
  return std::unique_ptr<Subprocess>(new Subprocess(pid, std::move(out_path), std::move(err_path)));
}

Subprocess::Subprocess(pid_t pid, std::string out_path, std::string err_path)
    : pid_(pid), out_path_(std::move(out_path)), err_path_(std::move(err_path)) {}

Subprocess::~Subprocess() {
  if (!exit_code_.has_value()) {
    kill(pid_, SIGKILL);
    Wait(absl::Seconds(10));
  }
  unlink(out_path_.c_str());
  unlink(err_path_.c_str());
}

bool Subprocess::Signal(int signal) { return !exit_code_.has_value() && kill(pid_, signal) == 0; }

std::optional<int> Subprocess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!exit_code_.has_value()) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    } else if (done < 0 && errno != EINTR) {
      exit_code_ = -1;
    } else if (absl::Now() >= deadline) {
      break;
    } else {
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
  return exit_code_;
}

std::string Subprocess::Stdout() const { return Slurp(out_path_); }
std::string Subprocess::Stderr() const { return Slurp(err_path_); }

CommandResult RunCommand(std::vector<std::string> argv, absl::Duration timeout,
                         std::vector<std::pair<std::string, std::string>> env) {
  CommandResult result;
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(std::move(argv), std::move(env));
  if (!process.ok()) {
    result.err = process.status().ToString();
    return result;
  }
  const std::optional<int> code = (*process)->Wait(timeout);
  result.exit_code = code.value_or(-1);
  result.out = (*process)->Stdout();
  result.err = (*process)->Stderr();
  return result;
}

std::string WriteTempFile(const std::string& name, const std::string& contents) {
  const std::string path = UniquePath(name);
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TempDirectory::TempDirectory(const std::string& name) : path_(UniquePath(name)) {
  std::filesystem::create_directories(path_);
}

TempDirectory::~TempDirectory() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace kvindex::testing
