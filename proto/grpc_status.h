#pragma once

// absl::Status <-> grpc::Status: the one place kvindex converts between them
// (server, client and tools). The two share their codes (0..16) and names;
// the message carries over unchanged. Pure functions; any thread.

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace kvindex {

// The same code and message as a gRPC status.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The same code and message as an absl::Status.
[[nodiscard]] absl::Status FromGrpcStatus(const grpc::Status& status);

// The absl::StatusCode of a gRPC code.
inline absl::StatusCode ToAbslCode(grpc::StatusCode code) { return static_cast<absl::StatusCode>(code); }

}  // namespace kvindex
