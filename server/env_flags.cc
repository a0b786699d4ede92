#include "server/env_flags.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kvindex::server {

absl::Status ApplyEnvFlagFallbacks(absl::string_view prefix, absl::string_view defined_in) {
  std::vector<absl::string_view> names;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsFlagFileOf(flag->Filename(), defined_in)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());  // deterministic error reporting
  for (absl::string_view name : names) {
    const std::string env_name = absl::StrCat(prefix, absl::AsciiStrToUpper(name));
    const char* value = std::getenv(env_name.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!absl::FindCommandLineFlag(name)->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(env_name, "=", value, ": ", error));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvindex::server
