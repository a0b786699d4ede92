#pragma once

// `kvindex match`: asks kvindex-server which pods hold the longest cached
// prefix of a prompt.

#include <cstdint>
#include <ostream>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli_args.h"
#include "client/cli_output.h"

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

// The prompt of `kvindex match` and `kvindex route`: --hashes into
// request.block_hashes, else --tokens or --tokens-file into request.token_ids
// (the caller checked that exactly one is given). Returns 0, or the exit code
// of the usage error it reported: a bad list through `usage_error(message)`,
// an unreadable file as `command`'s usage error on `err`.
template <typename Request, typename UsageError>
int ReadPrompt(const cli::CliArgs& args, std::string_view command, Request& request, UsageError usage_error,
               std::ostream& err) {
  if (auto hashes_text = args.Get("--hashes")) {
    absl::StatusOr<std::vector<uint64_t>> hashes = ParseHashList(*hashes_text);
    if (!hashes.ok()) return usage_error(hashes.status().message());
    request.mutable_block_hashes()->Add(hashes->begin(), hashes->end());
    return 0;
  }
  absl::StatusOr<std::string> text = args.Has("--tokens") ? absl::StatusOr<std::string>(*args.Get("--tokens"))
                                                          : cli::ReadInputFile(*args.Get("--tokens-file"));
  if (!text.ok()) return cli::ReportUsageError(command, text.status(), err);
  absl::StatusOr<std::vector<uint32_t>> tokens = ParseTokenList(*text);
  if (!tokens.ok()) return usage_error(tokens.status().message());
  request.mutable_token_ids()->Add(tokens->begin(), tokens->end());
  return 0;
}

}  // namespace kvindex
