#pragma once

// MatchLatch: a test seam of kvindex-server, off unless the hidden flag
// --testonly_match_latch_dir=DIR is set (it is defined outside main.cc, so
// --help does not list it and no KVINDEX_* variable sets it). It lets a test
// hold a Match in flight for as long as it likes, deterministically, e.g. to
// send SIGTERM while a call is in the server's hands:
//
//   - a Match whose client metadata carries `kvindex-testonly-latch: NAME`
//     (NAME: 1-64 of [A-Za-z0-9_-]) creates DIR/NAME.held, then is held (on a
//     thread of the latch's own, never one of gRPC's) until DIR/NAME.release
//     exists, when it is answered as usual, or until the call is cancelled
//     (or 60 s have passed), when it is finished with CANCELLED;
//   - every other Match (or any Match, without the flag) goes on at once.

#include "server/kvindex_service.h"

namespace kvindex::server {

// ServiceOptions::hold_match from --testonly_match_latch_dir; empty when unset.
decltype(ServiceOptions::hold_match) MatchLatchFromFlags();

}  // namespace kvindex::server
