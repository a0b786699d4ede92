#pragma once

// Environment fallbacks for absl flags: KVINDEX_LISTEN=... acts as --listen=...
// Apply them before absl::ParseCommandLine so that the command line wins.

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/flags_help.h"

namespace kvindex::server {

using ::kvindex::IsFlagFileOf;  // server/flags_help.h

// For every flag defined in source file `defined_in` (pass __FILE__), sets
// it from the environment variable `prefix` + its name in capitals when that
// variable is set. INVALID_ARGUMENT naming the variable when a value does not
// parse; flags before it keep what they were set to.
[[nodiscard]] absl::Status ApplyEnvFlagFallbacks(absl::string_view prefix, absl::string_view defined_in);

}  // namespace kvindex::server
