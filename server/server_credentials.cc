#include "server/server_credentials.h"

#include <utility>

#include "core/util/read_file.h"

namespace kvindex::server {

absl::Status CheckTlsFiles(const TlsFiles& files) {
  if (files.cert_file.empty() && files.key_file.empty()) {
    if (!files.client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
    }
    return absl::OkStatus();
  }
  if (files.cert_file.empty() || files.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& files) {
  if (absl::Status valid = CheckTlsFiles(files); !valid.ok()) return valid;
  if (files.cert_file.empty()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = kvindex::ReadFileToString(files.cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = kvindex::ReadFileToString(files.key_file);
  if (!key.ok()) return key.status();

  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({.private_key = *std::move(key), .cert_chain = *std::move(cert)});
  if (!files.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = kvindex::ReadFileToString(files.client_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakePeerCredentials(const TlsFiles& own,
                                                                             const std::string& peer_ca_file) {
  if (own.cert_file.empty() && peer_ca_file.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (!peer_ca_file.empty()) {
    absl::StatusOr<std::string> ca = kvindex::ReadFileToString(peer_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  if (!own.client_ca_file.empty()) {
    absl::StatusOr<std::string> cert = kvindex::ReadFileToString(own.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = kvindex::ReadFileToString(own.key_file);
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *std::move(cert);
    options.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(options);
}

}  // namespace kvindex::server
