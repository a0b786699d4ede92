#include "tools/bench/target.h"

#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/util/read_file.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

ABSL_FLAG(std::string, server, "", "kvindex-server host:port (empty with --spawn: the one started).");
ABSL_FLAG(std::string, token, "", "Bearer token sent with every kvindex.v1 call.");
ABSL_FLAG(std::string, token_file, "", "Read the bearer token from this file.");
ABSL_FLAG(bool, tls, false, "Use TLS (system roots unless --tls_ca_file).");
ABSL_FLAG(std::string, tls_ca_file, "", "PEM roots that verify the server (implies --tls).");
ABSL_FLAG(std::string, tls_cert_file, "", "Client certificate chain for mutual TLS (with --tls_key_file).");
ABSL_FLAG(std::string, tls_key_file, "", "Private key of --tls_cert_file.");
ABSL_FLAG(std::string, tls_server_name, "", "Name expected in the server certificate instead of the host.");

namespace kvindex::bench {

const char* TargetFlagsFile() { return __FILE__; }

absl::StatusOr<Target> TargetFromFlags() {
  Target t;
  t.server = absl::GetFlag(FLAGS_server);
  t.token = absl::GetFlag(FLAGS_token);
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = ReadFileToString(path);
    if (!token.ok()) return token.status();
    t.token = std::string(absl::StripAsciiWhitespace(*token));
  }
  t.tls = absl::GetFlag(FLAGS_tls);
  t.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  t.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  t.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  t.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  return t;
}

client::ClientOptions ToClientOptions(const Target& target) {
  client::ClientOptions o;
  o.server = target.server;
  o.token = target.token;
  o.tls = target.tls;
  o.tls_ca_file = target.tls_ca_file;
  o.tls_cert_file = target.tls_cert_file;
  o.tls_key_file = target.tls_key_file;
  o.tls_server_name = target.tls_server_name;
  o.timeout = absl::Seconds(10);
  return o;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const Target& target, int connection) {
  client::ClientOptions options = ToClientOptions(target);
  options.max_message_bytes = 64 << 20;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = client::ChannelCredentialsFor(options);
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments args = client::ChannelArgumentsFor(options);
  // One connection per channel: channels with distinct arguments share no subchannel.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("kvindex.bench.connection", connection);
  return grpc::CreateCustomChannel(target.server, *credentials, args);
}

}  // namespace kvindex::bench
