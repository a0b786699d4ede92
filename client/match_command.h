#pragma once

// `kvindex match`: asks kvindex-server which pods hold the longest cached
// prefix of a prompt.

#include <cstdint>
#include <ostream>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvindex {

// Runs `kvindex match` with `args` (the words after "match"):
//   --model M [--lora L] (--tokens 1,2,3 | --tokens-file F | --hashes H,...)
//   [--pods ns/a,ns/b] [--weight GPU=1,CPU=0.5] + connection flags.
// Prints a table of matching pods (or the response as JSON with --json).
// Returns 0 on success, 1 when the call fails, 2 on a usage error.
int RunMatchCommand(std::span<const std::string_view> args, std::ostream& out, std::ostream& err);

// Token ids from text: unsigned 32-bit integers separated by commas,
// whitespace or JSON brackets ("1,2,3", "[1, 2, 3]", one per line).
// INVALID_ARGUMENT naming the first bad word.
[[nodiscard]] absl::StatusOr<std::vector<uint32_t>> ParseTokenList(std::string_view text);

// Block hashes from text, like ParseTokenList but 64-bit, decimal or 0x-hex.
[[nodiscard]] absl::StatusOr<std::vector<uint64_t>> ParseHashList(std::string_view text);

}  // namespace kvindex
