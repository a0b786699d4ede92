#include "server/match_latch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, testonly_match_latch_dir, "",
          "Test seam (server/match_latch.h): a Match with metadata kvindex-testonly-latch: NAME is held until "
          "DIR/NAME.release exists. Empty: off.");

namespace kvindex::server {
namespace {

constexpr char kLatchKey[] = "kvindex-testonly-latch";
constexpr absl::Duration kLongestHold = absl::Seconds(60);
constexpr absl::Duration kPollInterval = absl::Milliseconds(2);

bool IsLatchName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

// One held Match. A detached thread polls for the release file and finishes
// the call; gRPC deletes the reactor (OnDone) after that Finish, so the thread
// touches nothing of it afterwards. `finishing_` orders the thread's Finish
// (and the answer it wrote) before OnDone in a way ThreadSanitizer sees too:
// gRPC's own hand-off runs through its uninstrumented core.
class HeldMatch final : public grpc::ServerUnaryReactor {
 public:
  HeldMatch(std::string name, std::string release_path, std::function<grpc::Status()> answer)
      : name_(std::move(name)), release_path_(std::move(release_path)), answer_(std::move(answer)) {
    std::thread([this, finishing = finishing_] { Run(*finishing); }).detach();
  }

  void OnCancel() override { cancelled_.store(true); }
  void OnDone() override {
    { const absl::MutexLock finished(finishing_.get()); }
    delete this;
  }

 private:
  void Run(absl::Mutex& finishing) {
    const absl::Time deadline = absl::Now() + kLongestHold;
    while (!cancelled_.load() && !Exists(release_path_) && absl::Now() < deadline) absl::SleepFor(kPollInterval);
    const absl::MutexLock finish(&finishing);
    if (cancelled_.load() || !Exists(release_path_)) {
      spdlog::warn("test latch {}: Match let go (cancelled)", name_);
      Finish(grpc::Status::CANCELLED);
    } else {
      spdlog::warn("test latch {}: Match let go (released)", name_);
      Finish(answer_());
    }
  }

  const std::string name_;
  const std::string release_path_;
  const std::function<grpc::Status()> answer_;
  const std::shared_ptr<absl::Mutex> finishing_ = std::make_shared<absl::Mutex>();
  std::atomic<bool> cancelled_{false};
};

grpc::ServerUnaryReactor* Hold(const std::string& dir, grpc::CallbackServerContext* context,
                               std::function<grpc::Status()> answer) {
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find(kLatchKey);
  if (it == metadata.end()) return nullptr;
  std::string name(it->second.data(), it->second.size());
  if (!IsLatchName(name)) return nullptr;
  const std::string held = absl::StrCat(dir, "/", name, ".held");
  if (const int fd = open(held.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644); fd >= 0) close(fd);
  spdlog::warn("test latch {}: Match held", name);
  std::string release = absl::StrCat(dir, "/", name, ".release");
  return new HeldMatch(std::move(name), std::move(release), std::move(answer));
}

}  // namespace

decltype(ServiceOptions::hold_match) MatchLatchFromFlags() {
  const std::string dir = absl::GetFlag(FLAGS_testonly_match_latch_dir);
  if (dir.empty()) return nullptr;
  return [dir](grpc::CallbackServerContext* context, std::function<grpc::Status()> answer) {
    return Hold(dir, context, std::move(answer));
  };
}

}  // namespace kvindex::server
