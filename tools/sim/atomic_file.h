#pragma once

// Whole-file writes that readers never see half done.

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace kvindex::sim {

// Writes `contents` to a temporary file beside `path`, then renames it over
// `path`. UNAVAILABLE (with the path and errno text) when any step fails; the
// old file, if any, is then left as it was.
[[nodiscard]] absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

}  // namespace kvindex::sim
