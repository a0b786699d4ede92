#pragma once

// BearerAuth: the shared-token check of kvindex-server. When the server has a
// token, SyncPods and ExportIndex (and with --auth_all_rpcs every kvindex.v1
// RPC) need the metadata `authorization: Bearer <token>`. Health and reflection stay open so
// that probes and grpcurl work.
//
// Thread safety: immutable after construction; Check may run concurrently.

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvindex::server {

class BearerAuth {
 public:
  // No token: every call is allowed.
  BearerAuth() = default;

  // Requires `token` (non-empty) on SyncPods and ExportIndex, and on every RPC when `all_rpcs`.
  BearerAuth(std::string token, bool all_rpcs);

  // Reads the token from `path` (surrounding whitespace trimmed). NOT_FOUND
  // when unreadable, INVALID_ARGUMENT when empty.
  [[nodiscard]] static absl::StatusOr<BearerAuth> FromFile(const std::string& path, bool all_rpcs);

  // Whether a token is configured at all.
  bool enabled() const { return !token_.empty(); }
  // The token; empty when none (kvindex-server presents it to its
  // --bootstrap_from peer, a replica of the same deployment).
  const std::string& token() const { return token_; }

  // OK, or UNAUTHENTICATED when the call needs a token and `authorization`
  // (the metadata value, empty when absent) does not carry the right one.
  // `always_guarded` says whether the call needs the token whenever one is
  // configured (SyncPods, which changes what is followed, and ExportIndex,
  // which reads the whole index); other calls need it only with `all_rpcs`.
  // The comparison takes time independent of where the tokens differ.
  [[nodiscard]] absl::Status Check(absl::string_view authorization, bool always_guarded) const;

 private:
  std::string token_;
  bool all_rpcs_ = false;
};

// Whether `a` equals `b`, in time that depends on a's length only.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

namespace internal {

// The loop of ConstantTimeEquals, with every byte it reads fetched through
// `read(s, i)` (returning s[i]) so that a test can record the reads. Whatever
// the contents, it reads a[0], b[0 % b.size()], a[1], b[1 % b.size()], ... up
// to a[a.size() - 1] (no b when b is empty), never stops early and never
// branches on a byte: the sequence of reads depends on the lengths only.
template <typename ReadByte>
bool ConstantTimeEqualsWith(absl::string_view a, absl::string_view b, ReadByte&& read) {
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;  // volatile: no early exit once it is non-zero
  for (size_t i = 0; i < a.size(); ++i) {
    const unsigned char mine = read(a, i);
    const unsigned char other = b.empty() ? 0 : read(b, i % b.size());
    diff = diff | (mine ^ other);
  }
  return diff == 0;
}

}  // namespace internal

}  // namespace kvindex::server
