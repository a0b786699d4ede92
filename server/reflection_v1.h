#pragma once

// ReflectionV1: server reflection as grpc.reflection.v1.ServerReflection, which
// current grpcurl asks for first. gRPC 1.51's reflection plugin serves only
// grpc.reflection.v1alpha; the two packages carry the same messages, field for
// field (same numbers, same types), so each v1 stream is relayed, one request
// and its one response at a time, to the server's own v1alpha service over an
// in-process channel: one implementation answers both, identically.
//
// Thread safety: Connect once, after the server is built; calls are safe from
// any thread.

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpcpp/server.h"

namespace kvindex::server {

class ReflectionV1 final : public grpc::reflection::v1::ServerReflection::Service {
 public:
  // Relays to `server`'s grpc.reflection.v1alpha service from now on; `server`
  // must outlive the calls. Until then calls are UNAVAILABLE.
  void Connect(grpc::Server* server) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops the channel (after the server's Shutdown, before it is destroyed).
  void Disconnect() ABSL_LOCKS_EXCLUDED(mu_);

  // One response per request, as grpc.reflection.v1alpha answers it.
  grpc::Status ServerReflectionInfo(grpc::ServerContext* context,
                                    grpc::ServerReaderWriter<grpc::reflection::v1::ServerReflectionResponse,
                                                             grpc::reflection::v1::ServerReflectionRequest>* stream)
      override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  std::shared_ptr<grpc::Channel> v1alpha_ ABSL_GUARDED_BY(mu_);  // in-process, to the same server
};

}  // namespace kvindex::server
