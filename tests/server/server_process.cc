#include "tests/server/server_process.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/testing/wait.h"

namespace kvindex::testing {

std::string BinPath(const std::string& name) { return absl::StrCat(KVINDEX_BIN_DIR, "/", name); }

absl::StatusOr<ServerProcess> StartServerProcess(std::vector<std::string> args,
                                                 std::vector<std::pair<std::string, std::string>> env) {
  std::vector<std::string> argv = {BinPath("kvindex-server"), "--listen=127.0.0.1:0", "--metrics_listen="};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(std::move(argv), std::move(env));
  if (!process.ok()) return process.status();
  constexpr std::string_view kMarker = "listening on 127.0.0.1:";
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    const std::string log = (*process)->Stderr();
    if (size_t at = log.find(kMarker); at != std::string::npos) {
      const size_t start = at + kMarker.size();
      const size_t end = log.find_first_not_of("0123456789", start);
      int port = 0;
      if (end != std::string::npos && absl::SimpleAtoi(log.substr(start, end - start), &port) && port > 0) {
        return ServerProcess{*std::move(process), port, absl::StrCat("127.0.0.1:", port)};
      }
    }
    if ((*process)->Wait(absl::ZeroDuration()).has_value()) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::UnavailableError(absl::StrCat("kvindex-server did not come up; stderr:\n", (*process)->Stderr()));
}

int MetricsPortOf(const ServerProcess& server) {
  int port = 0;
  testutil::WaitFor([&] {
    const std::string log = server.process->Stderr();
    constexpr std::string_view kMarker = "metrics on http://127.0.0.1:";
    const size_t at = log.find(kMarker);
    if (at == std::string::npos) return false;
    const size_t start = at + kMarker.size();
    return absl::SimpleAtoi(log.substr(start, log.find('/', start) - start), &port);
  });
  return port;
}

}  // namespace kvindex::testing
