#pragma once

// The process's open-files limit (RLIMIT_NOFILE), raised at start to what its
// sockets need (kvindex-server: the subscriptions, so that a pod never fails
// late with "Too many open files"; kvindex-sim: its engines). Called once from
// main, before any thread starts.

#include <cstdint>

#include "absl/status/statusor.h"

namespace kvindex {

struct OpenFilesLimit {
  uint64_t soft = 0;  // in force now
  uint64_t hard = 0;  // the most an unprivileged process may raise it to
};

// Raises the soft limit to `needed`, or to the hard limit when that is lower
// (never lowers it). Returns the limits now in force; INTERNAL when they
// cannot be read.
[[nodiscard]] absl::StatusOr<OpenFilesLimit> RaiseOpenFilesLimit(uint64_t needed);

}  // namespace kvindex
