#include "client/kvindex_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/util/read_file.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "proto/grpc_status.h"

namespace kvindex::client {
namespace {

// Pods per ListPods page at first: a few hundred KiB, far below the usual message limit.
constexpr uint32_t kListPodsPageSize = 500;

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(const ClientOptions& options) {
  const bool tls = options.tls || !options.tls_ca_file.empty() || !options.tls_cert_file.empty() ||
                   !options.tls_key_file.empty();
  if (!tls) return grpc::InsecureChannelCredentials();
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("a client certificate needs both its cert and key files");
  }
  grpc::SslCredentialsOptions ssl;
  for (auto [path, out] : {std::pair{&options.tls_ca_file, &ssl.pem_root_certs},
                           std::pair{&options.tls_cert_file, &ssl.pem_cert_chain},
                           std::pair{&options.tls_key_file, &ssl.pem_private_key}}) {
    if (path->empty()) continue;
    absl::StatusOr<std::string> pem = ReadFileToString(*path);
    if (!pem.ok()) return pem.status();
    *out = *std::move(pem);
  }
  return grpc::SslCredentials(ssl);
}

grpc::ChannelArguments ChannelArgumentsFor(const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  return args;
}

absl::StatusOr<std::unique_ptr<KvIndexClient>> KvIndexClient::Create(const ClientOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = ChannelCredentialsFor(options);
  if (!credentials.ok()) return credentials.status();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.server, *credentials, ChannelArgumentsFor(options));
  return std::unique_ptr<KvIndexClient>(new KvIndexClient(options, std::move(channel)));
}

KvIndexClient::KvIndexClient(const ClientOptions& options, std::shared_ptr<grpc::Channel> channel)
    : token_(options.token), timeout_(options.timeout), stub_(v1::KvIndex::NewStub(std::move(channel))) {}

void KvIndexClient::Prepare(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  if (!token_.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
}

absl::StatusOr<v1::MatchResponse> KvIndexClient::Match(const v1::MatchRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::MatchResponse response;
  if (absl::Status status = FromGrpcStatus(stub_->Match(&context, request, &response)); !status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ListPodsResponse> KvIndexClient::ListPods() {
  v1::ListPodsRequest request;
  request.set_page_size(kListPodsPageSize);
  v1::ListPodsResponse all;
  while (true) {
    absl::StatusOr<v1::ListPodsResponse> page = ListPods(request);
    // Pods with many labels may not fit a page in the server's message limit: smaller pages.
    if (page.status().code() == absl::StatusCode::kResourceExhausted && request.page_size() > 1) {
      request.set_page_size(request.page_size() / 2);
      continue;
    }
    if (!page.ok()) return page.status();
    for (v1::PodInfo& pod : *page->mutable_pods()) *all.add_pods() = std::move(pod);
    if (page->next_page_token().empty()) return all;
    request.set_page_token(page->next_page_token());
  }
}

absl::StatusOr<v1::ListPodsResponse> KvIndexClient::ListPods(const v1::ListPodsRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::ListPodsResponse response;
  if (absl::Status status = FromGrpcStatus(stub_->ListPods(&context, request, &response)); !status.ok()) {
    return status;
  }
  return response;
}

absl::StatusOr<v1::GetStatsResponse> KvIndexClient::GetStats() {
  grpc::ClientContext context;
  Prepare(&context);
  v1::GetStatsResponse response;
  if (absl::Status status = FromGrpcStatus(stub_->GetStats(&context, {}, &response)); !status.ok()) return status;
  return response;
}

absl::StatusOr<v1::RecordRoutingResponse> KvIndexClient::RecordRouting(const v1::RecordRoutingRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::RecordRoutingResponse response;
  if (absl::Status status = FromGrpcStatus(stub_->RecordRouting(&context, request, &response)); !status.ok()) {
    return status;
  }
  return response;
}

absl::StatusOr<std::vector<v1::PodUpdateAck>> KvIndexClient::SyncPods(const std::vector<v1::PodUpdate>& updates) {
  grpc::ClientContext context;
  Prepare(&context);
  std::unique_ptr<grpc::ClientReaderWriter<v1::PodUpdate, v1::PodUpdateAck>> stream = stub_->SyncPods(&context);
  // Lock-step: the server answers every update with exactly one ack, so
  // reading each before the next write never lets either side's buffers fill.
  std::vector<v1::PodUpdateAck> acks;
  for (const v1::PodUpdate& update : updates) {
    v1::PodUpdateAck ack;
    if (!stream->Write(update) || !stream->Read(&ack)) break;
    acks.push_back(std::move(ack));
  }
  stream->WritesDone();
  for (v1::PodUpdateAck extra; stream->Read(&extra);) {
  }
  if (absl::Status status = FromGrpcStatus(stream->Finish()); !status.ok()) return status;
  if (acks.size() != updates.size()) {
    return absl::InternalError(absl::StrCat("server sent ", acks.size(), " acks for ", updates.size(), " updates"));
  }
  return acks;
}

}  // namespace kvindex::client
