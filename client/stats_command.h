#pragma once

// `kvindex stats`: the server's totals.

#include <ostream>
#include <span>
#include <string_view>

namespace kvindex {

// Runs `kvindex stats` with `args` (connection flags only). Prints one
// "name  value" line per GetStatsResponse field (JSON with --json). Returns 0
// on success, 1 when the call fails, 2 on a usage error.
int RunStatsCommand(std::span<const std::string_view> args, std::ostream& out, std::ostream& err);

}  // namespace kvindex
