#include "server/reflection_v1.h"

#include <string>
#include <utility>

#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/byte_buffer.h"

namespace kvindex::server {
namespace {

using Request = grpc::reflection::v1::ServerReflectionRequest;
using Response = grpc::reflection::v1::ServerReflectionResponse;

constexpr char kV1AlphaMethod[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

// One v1alpha stream driven synchronously on a completion queue of its own.
class V1AlphaStream {
 public:
  // The call inherits the server call's deadline and cancellation.
  V1AlphaStream(const std::shared_ptr<grpc::Channel>& channel, const grpc::ServerContext& server_context)
      : context_(grpc::ClientContext::FromServerContext(server_context)), stub_(channel) {
    call_ = stub_.PrepareCall(context_.get(), kV1AlphaMethod, &cq_);
    call_->StartCall(this);
    started_ = Await();
  }
  ~V1AlphaStream() {
    if (!finished_) {
      context_->TryCancel();
      grpc::Status ignored;
      call_->Finish(&ignored, this);
      Await();
    }
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  V1AlphaStream(const V1AlphaStream&) = delete;
  V1AlphaStream& operator=(const V1AlphaStream&) = delete;

  // Sends `request` and reads its response; false when the stream broke (see Finish).
  bool Exchange(const Request& request, Response* response) {
    if (!started_) return false;
    grpc::ByteBuffer out;
    bool own = false;
    if (!grpc::SerializationTraits<Request>::Serialize(request, &out, &own).ok()) return false;
    call_->Write(out, this);
    if (!Await()) return false;
    grpc::ByteBuffer in;
    call_->Read(&in, this);
    if (!Await()) return false;
    return grpc::SerializationTraits<Response>::Deserialize(&in, response).ok();
  }

  // Half-closes and returns the v1alpha call's status.
  grpc::Status Finish() {
    if (started_) {
      call_->WritesDone(this);
      Await();
    }
    grpc::Status status;
    call_->Finish(&status, this);
    Await();
    finished_ = true;
    return status;
  }

 private:
  // Waits for the one operation in flight.
  bool Await() {
    void* tag = nullptr;
    bool ok = false;
    return cq_.Next(&tag, &ok) && ok;
  }

  std::unique_ptr<grpc::ClientContext> context_;
  grpc::GenericStub stub_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  bool started_ = false;
  bool finished_ = false;
};

}  // namespace

void ReflectionV1::Connect(grpc::Server* server) {
  std::shared_ptr<grpc::Channel> channel = server->InProcessChannel(grpc::ChannelArguments());
  absl::MutexLock lock(&mu_);
  v1alpha_ = std::move(channel);
}

void ReflectionV1::Disconnect() {
  absl::MutexLock lock(&mu_);
  v1alpha_.reset();
}

grpc::Status ReflectionV1::ServerReflectionInfo(grpc::ServerContext* context,
                                                grpc::ServerReaderWriter<Response, Request>* stream) {
  std::shared_ptr<grpc::Channel> channel;
  {
    absl::MutexLock lock(&mu_);
    channel = v1alpha_;
  }
  if (channel == nullptr) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "reflection is not ready yet");
  V1AlphaStream v1alpha(channel, *context);
  Request request;
  while (stream->Read(&request)) {
    Response response;
    if (!v1alpha.Exchange(request, &response)) return v1alpha.Finish();
    if (!stream->Write(response)) break;
  }
  return v1alpha.Finish();
}

}  // namespace kvindex::server
