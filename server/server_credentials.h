#pragma once

// Transport credentials of kvindex-server: plaintext, TLS, or mutual TLS; and
// those its bootstrap client (--bootstrap_from) connects to a peer with.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace kvindex::server {

// PEM files; all empty means plaintext.
struct TlsFiles {
  std::string cert_file;       // server certificate chain
  std::string key_file;        // its private key
  std::string client_ca_file;  // when set: clients must present a certificate signed by it (mTLS)
};

// OK when the files named make sense together: none, cert and key, or cert,
// key and client CA; INVALID_ARGUMENT naming the flags otherwise. Reads nothing.
[[nodiscard]] absl::Status CheckTlsFiles(const TlsFiles& files);

// Insecure credentials when no file is named, else TLS (mTLS with a client CA).
// INVALID_ARGUMENT when only one of cert/key is given or a client CA comes
// without them; NOT_FOUND when a file cannot be read.
[[nodiscard]] absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& files);

// Credentials for a peer replica, which serves as this server does (one
// deployment, one configuration): plaintext when this server serves plaintext
// and no `peer_ca_file` is named; else TLS, verifying the peer with
// `peer_ca_file` (--bootstrap_ca_file; empty: the system's roots) and, when
// this server requires client certificates (own.client_ca_file), presenting
// its own certificate and key. NOT_FOUND when a file cannot be read.
[[nodiscard]] absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakePeerCredentials(
    const TlsFiles& own, const std::string& peer_ca_file);

}  // namespace kvindex::server
