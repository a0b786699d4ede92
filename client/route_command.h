#pragma once

// `kvindex route`: tells kvindex-server that a gateway sent a prompt to a pod
// (RecordRouting): its blocks become speculative entries until the engine
// confirms them or the TTL passes.

#include <ostream>
#include <span>
#include <string_view>

namespace kvindex {

// Runs `kvindex route` with `args` (the words after "route"):
//   --model M [--lora L] (--tokens 1,2,3 | --tokens-file F | --hashes H,...) --pod NS/NAME
//   [--rank R] [--ttl-ms N] [--cache-salt S] + connection flags.
// Prints the entries written and the TTL applied (the response as JSON with
// --json). Returns 0 on success, 1 when the call fails, 2 on a usage error.
int RunRouteCommand(std::span<const std::string_view> args, std::ostream& out, std::ostream& err);

}  // namespace kvindex
