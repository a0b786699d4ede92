#pragma once

// Completion: the outcome of a command run on an I/O thread, awaited with a
// bound by the thread that posted it.
//
// Thread safety: Finish from the I/O thread, Wait from any thread.

#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace kvindex {

class Completion {
 public:
  void Finish(absl::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      status_ = std::move(status);
    }
    done_.Notify();
  }
  // nullopt when not finished within `timeout`.
  [[nodiscard]] std::optional<absl::Status> Wait(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_) {
    if (!done_.WaitForNotificationWithTimeout(timeout)) return std::nullopt;
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  absl::Notification done_;
  absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvindex
