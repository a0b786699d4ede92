#pragma once

// Checks a command line's flags before absl::ParseCommandLine, which exits 1
// on a bad flag: kvindex-server exits 2 for anything wrong in its flags
// (README), so main() asks here first and exits 2 with the message.

#include "absl/status/status.h"

namespace kvindex::server {

// INVALID_ARGUMENT naming the first argument of argv[1..argc) that
// absl::ParseCommandLine would reject: an unknown flag, a value that does not
// parse for its flag's type, or a non-boolean flag without a value. Knows
// --name=value, --name value, -name, --noname (booleans) and "--" (the end
// of flags), --undefok; absl's own flags (--help, --version, --flagfile,
// --fromenv, ...) are left to absl. Sets each flag it checks to the
// value given (ParseCommandLine sets it again). Main thread, before parsing.
[[nodiscard]] absl::Status CheckCommandLineFlags(int argc, char** argv);

}  // namespace kvindex::server
