#pragma once

// KvIndexClient: a small C++ client of kvindex.v1.KvIndex over the generated
// stubs: channel options, bearer token, TLS and mutual TLS, and
// absl::Status results.
//
// Thread safety: every call may be made concurrently (gRPC channels are).

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "kvindex/v1/kvindex.grpc.pb.h"

namespace kvindex::client {

struct ClientOptions {
  // host:port of kvindex-server.
  std::string server = "localhost:50051";
  // Sent as `authorization: Bearer <token>` when non-empty.
  std::string token;
  // TLS: on when `tls` is set or any tls_* file is named.
  bool tls = false;
  std::string tls_ca_file;      // PEM roots that verify the server; empty: system roots
  std::string tls_cert_file;    // client certificate chain (mutual TLS)
  std::string tls_key_file;     // its private key
  std::string tls_server_name;  // name to check in the server's certificate instead of the host
  // Largest message sent or received, bytes.
  int max_message_bytes = 16 << 20;
  // Deadline of each call.
  absl::Duration timeout = absl::Seconds(30);
};

// The channel credentials `options` ask for: insecure, TLS (system roots or
// tls_ca_file) or mutual TLS. INVALID_ARGUMENT when only one of cert/key is
// named; NOT_FOUND when a TLS file is unreadable. Tools that build their own
// channels (kvindex-bench) use it too.
[[nodiscard]] absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(const ClientOptions& options);

// The channel arguments `options` ask for (message sizes, TLS server name).
grpc::ChannelArguments ChannelArgumentsFor(const ClientOptions& options);

class KvIndexClient {
 public:
  // Builds the channel (connection happens on the first call). INVALID_ARGUMENT
  // when only one of cert/key is named; NOT_FOUND when a TLS file is unreadable.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<KvIndexClient>> Create(const ClientOptions& options);

  // The RPCs of kvindex.v1.KvIndex; a non-OK gRPC status comes back as the
  // absl::Status with the same code and message.
  [[nodiscard]] absl::StatusOr<v1::MatchResponse> Match(const v1::MatchRequest& request);
  // ListPods: every pod, fetched page by page (so any number fits); the
  // second form asks for one page.
  [[nodiscard]] absl::StatusOr<v1::ListPodsResponse> ListPods();
  [[nodiscard]] absl::StatusOr<v1::ListPodsResponse> ListPods(const v1::ListPodsRequest& request);
  [[nodiscard]] absl::StatusOr<v1::GetStatsResponse> GetStats();
  // RecordRouting: tells the server this prompt was sent to this pod (its
  // blocks become speculative entries until the engine confirms them).
  [[nodiscard]] absl::StatusOr<v1::RecordRoutingResponse> RecordRouting(const v1::RecordRoutingRequest& request);

  // Opens one SyncPods stream, sends `updates`, half-closes, and returns the
  // acks (one per update, in order).
  [[nodiscard]] absl::StatusOr<std::vector<v1::PodUpdateAck>> SyncPods(const std::vector<v1::PodUpdate>& updates);

 private:
  KvIndexClient(const ClientOptions& options, std::shared_ptr<grpc::Channel> channel);
  void Prepare(grpc::ClientContext* context) const;

  const std::string token_;
  const absl::Duration timeout_;
  std::unique_ptr<v1::KvIndex::Stub> stub_;
};

}  // namespace kvindex::client
