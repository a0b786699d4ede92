#include "server/manager_config.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace kvindex {

std::optional<bool> ParseEnvBool(std::string_view value) {
  for (std::string_view yes : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (value == yes) return true;
  }
  for (std::string_view no : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (value == no) return false;
  }
  return std::nullopt;
}

absl::Status ApplyManagerEnv(ManagerOptions* options,
                             const std::function<const char*(const char*)>& getenv) {
  const char* value = getenv(kSyncEnabledEnv);
  if (value == nullptr) return absl::OkStatus();
  std::optional<bool> enabled = ParseEnvBool(value);
  if (!enabled.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kSyncEnabledEnv, "=\"", value, "\" is not a boolean (true/false)"));
  }
  options->sync_enabled = *enabled;
  return absl::OkStatus();
}

absl::Status ApplyManagerEnv(ManagerOptions* options) {
  return ApplyManagerEnv(options, [](const char* name) { return std::getenv(name); });
}

}  // namespace kvindex
