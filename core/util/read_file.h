#pragma once

// Whole-file reads of the small files the server and the CLI are pointed at
// (auth tokens, PEM files, pod snapshots, token lists).

#include <string>

#include "absl/status/statusor.h"

namespace kvindex {

// The file's bytes; NOT_FOUND naming the path when it cannot be opened.
[[nodiscard]] absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace kvindex
