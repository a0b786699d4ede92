#pragma once

// Target: where and how the benchmarks reach kvindex-server (address, bearer
// token, TLS), from the same connection flags in kvindex-bench and
// kvindex-ingest-bench: --server, --token, --token_file, --tls, --tls_ca_file,
// --tls_cert_file, --tls_key_file, --tls_server_name (the CLI's flags with
// underscores).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/kvindex_client.h"
#include "grpcpp/channel.h"

namespace kvindex::bench {

struct Target {
  std::string server = "localhost:50051";
  std::string token;  // sent as `authorization: Bearer <token>` when non-empty
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
};

// The file defining the connection flags (its __FILE__), for --help.
const char* TargetFlagsFile();

// The connection flags. INVALID_ARGUMENT / NOT_FOUND for an unreadable --token_file.
[[nodiscard]] absl::StatusOr<Target> TargetFromFlags();

// Options for the C++ client library (sync calls: setup, stats, probes).
client::ClientOptions ToClientOptions(const Target& target);

// A channel with its own TCP connection: channels made with different
// `connection` values never share one (local subchannel pool). INVALID_ARGUMENT
// / NOT_FOUND for bad TLS files.
[[nodiscard]] absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const Target& target, int connection);

}  // namespace kvindex::bench
