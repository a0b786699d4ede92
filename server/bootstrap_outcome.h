#pragma once

// How a bootstrap from a peer (kvindex-server --bootstrap_from,
// server/peer_bootstrap.h) ended: the label of kvindex_bootstrap_total.
//
// Plain values; thread-safe.

#include <string_view>

namespace kvindex::server {

enum class BootstrapOutcome {
  kLoaded,           // the index holds the peer's workers
  kUnreachable,      // no peer answered (UNAVAILABLE: refused connection, no address, peer shutting down)
  kUnauthenticated,  // the peer refused the token (UNAUTHENTICATED, PERMISSION_DENIED)
  kDeadline,         // the export did not finish within --bootstrap_timeout
  kRefused,          // the export arrived but was refused: another format version, other hashing, corrupt
  kFailed,           // any other error of the call (e.g. UNIMPLEMENTED: a peer without ExportIndex)
};

inline constexpr BootstrapOutcome kBootstrapOutcomes[] = {
    BootstrapOutcome::kLoaded,   BootstrapOutcome::kUnreachable, BootstrapOutcome::kUnauthenticated,
    BootstrapOutcome::kDeadline, BootstrapOutcome::kRefused,     BootstrapOutcome::kFailed};

// "loaded", "unreachable", "unauthenticated", "deadline", "refused", "failed".
constexpr std::string_view BootstrapOutcomeName(BootstrapOutcome outcome) {
  switch (outcome) {
    case BootstrapOutcome::kLoaded:
      return "loaded";
    case BootstrapOutcome::kUnreachable:
      return "unreachable";
    case BootstrapOutcome::kUnauthenticated:
      return "unauthenticated";
    case BootstrapOutcome::kDeadline:
      return "deadline";
    case BootstrapOutcome::kRefused:
      return "refused";
    case BootstrapOutcome::kFailed:
      return "failed";
  }
  return "unknown";
}

}  // namespace kvindex::server
