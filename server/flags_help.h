#pragma once

// --help for every kvindex executable built on absl flags (kvindex-server,
// kvindex-sim, kvindex-bench, kvindex-ingest-bench). absl's own --help exits 1,
// prefixes the usage with the program name and lists flags under the build
// path of their file (or, for a binary named unlike its source, lists none);
// these calls answer --help before absl::ParseCommandLine sees it: the usage,
// then the program's own flags, sorted, and the caller exits 0.

#include <initializer_list>
#include <string>

#include "absl/strings/string_view.h"

namespace kvindex {

// Whether `flag_file`, a flag's file name as absl reports it (normalized:
// leading '/' dropped), names `source_file` (a __FILE__).
[[nodiscard]] bool IsFlagFileOf(absl::string_view flag_file, absl::string_view source_file);

// True when argv[1..argc) asks for help before any "--": --help, -help,
// --helpfull, --helpshort (with or without =value).
[[nodiscard]] bool HelpRequested(int argc, char** argv);

// `usage`, a blank line, then one entry per flag defined in any of
// `defined_in` (__FILE__s), sorted by name: "  --name=DEFAULT" (strings
// quoted), its help text indented below. Ends with a newline.
[[nodiscard]] std::string FlagsHelp(absl::string_view usage, std::initializer_list<absl::string_view> defined_in);

}  // namespace kvindex
