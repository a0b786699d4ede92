#include "server/snapshot_keeper.h"

#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace kvindex::server {

SnapshotKeeper::SnapshotKeeper(SnapshotOptions options, PrefixIndex* index, const SubscriptionManager* pods,
                               KvIndexMetrics* metrics)
    : options_(std::move(options)), index_(index), pods_(pods), metrics_(metrics) {}

SnapshotKeeper::~SnapshotKeeper() { Stop(); }

SnapshotLoad SnapshotKeeper::Load(const SnapshotOptions& options, PrefixIndex* index, KvIndexMetrics* metrics) {
  SnapshotLoad load = LoadIndexSnapshot(options.dir, "", index);
  metrics->OnSnapshotLoad(load);
  switch (load.outcome) {
    case SnapshotLoadOutcome::kLoaded:
      spdlog::info("snapshot loaded from {}: {} pods, {} workers ({} entries, {} workers without their pod), "
                   "{} bytes, taken {} ago, in {}",
                   options.dir, load.pods.size(), load.workers, load.entries, load.skipped, load.bytes,
                   absl::FormatDuration(absl::Trunc(absl::Now() - load.created, absl::Milliseconds(1))),
                   absl::FormatDuration(absl::Trunc(load.duration, absl::Microseconds(100))));
      break;
    case SnapshotLoadOutcome::kNone:
      spdlog::info("no snapshot in {}: starting cold", options.dir);
      break;
    default:
      spdlog::error("snapshot in {} refused ({}): {}; starting cold", options.dir,
                    SnapshotLoadOutcomeName(load.outcome), load.status.ToString());
      break;
  }
  return load;
}

void SnapshotKeeper::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Run(); });
}

void SnapshotKeeper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void SnapshotKeeper::Run() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.interval)) return;
    }
    Write(absl::InfiniteFuture(), "periodic");
  }
}

void SnapshotKeeper::WriteFinal(absl::Time deadline) {
  absl::Duration last;
  {
    absl::MutexLock lock(&mu_);
    last = last_write_;
  }
  const absl::Duration left = deadline - absl::Now();
  if (last > left) {
    spdlog::warn("no snapshot at shutdown: the last one took {}, {} left; the one from before stays",
                 absl::FormatDuration(last), absl::FormatDuration(left));
    return;
  }
  Write(deadline, "at shutdown");
}

bool SnapshotKeeper::Write(absl::Time deadline, const char* why) {
  std::vector<Pod> pods;
  for (const PodStatus& status : pods_->ListPods()) pods.push_back(status.pod);
  absl::StatusOr<SnapshotWriteStats> stats =
      WriteIndexSnapshot(*index_, pods, SnapshotWriteOptions{.dir = options_.dir, .deadline = deadline});
  metrics_->OnSnapshotWrite(stats);
  if (!stats.ok()) {
    spdlog::error("snapshot {} into {} failed: {}", why, options_.dir, stats.status().ToString());
    return false;
  }
  {
    absl::MutexLock lock(&mu_);
    last_write_ = stats->duration;
  }
  spdlog::info("snapshot {}: {} pods, {} workers, {} entries, {} bytes in {} (longest pause of one worker {})", why,
               stats->pods, stats->workers, stats->entries, stats->bytes,
               absl::FormatDuration(absl::Trunc(stats->duration, absl::Microseconds(100))),
               absl::FormatDuration(absl::Trunc(stats->longest_pause, absl::Microseconds(1))));
  return true;
}

}  // namespace kvindex::server
