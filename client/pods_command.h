#pragma once

// `kvindex pods`: the control plane's side of SyncPods from the command line,
// and the server's view of its pods.

#include <ostream>
#include <span>
#include <string_view>

namespace kvindex {

// Runs `kvindex pods` with `args` (the words after "pods"):
//   apply -f SNAPSHOT.textproto  replace the server's pods with a PodSnapshot (text format; '-': stdin)
//   delete NAMESPACE/NAME        forget one pod
//   list                         every known pod and its subscription
// plus connection flags. Prints acks / pods as a table (JSON with --json).
// Returns 0 on success, 1 when the call fails or a pod was rejected, 2 on a
// usage error.
int RunPodsCommand(std::span<const std::string_view> args, std::ostream& out, std::ostream& err);

}  // namespace kvindex
