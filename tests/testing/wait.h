#pragma once

// The one way tests wait: poll a condition until it holds or a deadline
// passes. Every wait in the suite has a deadline; a test asserts the result
// (the condition), never how long it took.

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvindex::testutil {

// Polls `condition` every `poll` until it holds (true) or `timeout` has passed;
// then checks it once more, so a condition that became true at the deadline
// counts. The poll interval paces the checks, it synchronises nothing: make it
// longer for a costly condition (an RPC, a file read).
inline bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(10),
                    absl::Duration poll = absl::Milliseconds(2)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return condition();
    absl::SleepFor(poll);
  }
  return true;
}

}  // namespace kvindex::testutil
