#include "server/bearer_auth.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/util/read_file.h"

namespace kvindex::server {

BearerAuth::BearerAuth(std::string token, bool all_rpcs)
    : token_(std::move(token)), all_rpcs_(all_rpcs) {}

absl::StatusOr<BearerAuth> BearerAuth::FromFile(const std::string& path, bool all_rpcs) {
  absl::StatusOr<std::string> contents = kvindex::ReadFileToString(path);
  if (!contents.ok()) return contents.status();
  std::string token(absl::StripAsciiWhitespace(*contents));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("auth token file ", path, " is empty"));
  return BearerAuth(std::move(token), all_rpcs);
}

absl::Status BearerAuth::Check(absl::string_view authorization, bool always_guarded) const {
  if (token_.empty() || (!always_guarded && !all_rpcs_)) return absl::OkStatus();
  if (authorization.empty()) return absl::UnauthenticatedError("missing authorization: Bearer <token>");
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError("authorization is not a Bearer token");
  }
  absl::string_view presented = absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  if (!ConstantTimeEquals(presented, token_)) return absl::UnauthenticatedError("wrong token");
  return absl::OkStatus();
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  return internal::ConstantTimeEqualsWith(
      a, b, [](absl::string_view s, size_t i) { return static_cast<unsigned char>(s[i]); });
}

}  // namespace kvindex::server
