#include "server/peer_bootstrap.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/snapshot/body_import.h"
#include "core/snapshot/snapshot_format.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "kvindex/v1/kvindex.grpc.pb.h"
#include "proto/grpc_status.h"
#include "spdlog/spdlog.h"

namespace kvindex::server {
namespace {

BootstrapOutcome OutcomeOfCall(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
      return BootstrapOutcome::kUnreachable;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return BootstrapOutcome::kUnauthenticated;
    case absl::StatusCode::kDeadlineExceeded:
      return BootstrapOutcome::kDeadline;
    default:
      return BootstrapOutcome::kFailed;
  }
}

// One ExportIndex call, on a channel of its own, ending by `deadline`.
BootstrapResult Stream(const BootstrapOptions& options, absl::Time deadline, PrefixIndex* index) {
  BootstrapResult result;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options.max_chunk_bytes) + (64 << 10));
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      options.peer, options.credentials != nullptr ? options.credentials : grpc::InsecureChannelCredentials(), args);
  std::unique_ptr<v1::KvIndex::Stub> stub = v1::KvIndex::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  if (!options.token.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", options.token));
  v1::ExportIndexRequest request;
  request.set_max_chunk_bytes(options.max_chunk_bytes);
  std::unique_ptr<grpc::ClientReader<v1::IndexChunk>> reader = stub->ExportIndex(&context, request);

  BodyImporter importer("", index);  // kvindex-server hashes with no flags (snapshot_format.h)
  absl::Status refused;  // set when this side stopped the stream
  v1::IndexChunk chunk;
  while (reader->Read(&chunk)) {
    result.bytes += chunk.body().size();
    if (chunk.format_version() != kSnapshotFormatVersion) {
      refused = absl::UnimplementedError(absl::StrCat("the peer exports format version ", chunk.format_version(),
                                                      ", this server reads ", kSnapshotFormatVersion));
    } else if (!importer.Add(chunk.body(), chunk.record_continues())) {
      refused = importer.Finish().status;
    }
    if (!refused.ok()) {
      context.TryCancel();
      while (reader->Read(&chunk)) {
      }
      break;
    }
  }
  const absl::Status call = FromGrpcStatus(reader->Finish());
  if (!refused.ok()) {
    result.outcome = BootstrapOutcome::kRefused;
    result.status = std::move(refused);
    return result;
  }
  if (!call.ok()) {
    result.outcome = OutcomeOfCall(call.code());
    result.status = call;
    return result;  // the importer takes back what it imported
  }
  result.load = importer.Finish();
  if (result.load.outcome != SnapshotLoadOutcome::kLoaded) {
    result.outcome = BootstrapOutcome::kRefused;
    result.status = result.load.status;
    return result;
  }
  result.outcome = BootstrapOutcome::kLoaded;
  return result;
}

}  // namespace

BootstrapResult BootstrapFromPeer(const BootstrapOptions& options, PrefixIndex* index, KvIndexMetrics* metrics) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + options.timeout;
  BootstrapResult result;
  uint64_t bytes = 0;
  absl::Duration pause = options.retry_pause;
  for (int attempt = 1;; ++attempt) {
    result = Stream(options, deadline, index);
    bytes += result.bytes;
    result.attempts = attempt;
    if (result.outcome != BootstrapOutcome::kUnreachable || attempt >= options.attempts ||
        absl::Now() + pause >= deadline) {
      break;
    }
    spdlog::warn("bootstrap from {}: attempt {} of {} reached no peer ({}); trying again in {}", options.peer, attempt,
                 options.attempts, std::string(result.status.message()), absl::FormatDuration(pause));
    absl::SleepFor(pause);
    pause *= 2;
  }
  result.bytes = bytes;
  metrics->OnBootstrap(result.outcome, result.bytes);
  const std::string took = absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1)));
  if (result.outcome == BootstrapOutcome::kLoaded) {
    const SnapshotLoad& load = result.load;
    uint64_t incomplete = 0;
    for (const WorkerResume& r : load.resumes) incomplete += r.cursor.history_complete ? 0 : 1;
    spdlog::info("bootstrapped from {}: {} pods, {} workers ({} entries, {} incomplete at the peer, {} without "
                 "their pod), {} bytes in {}",
                 options.peer, load.pods.size(), load.workers, load.entries, incomplete, load.skipped, result.bytes,
                 took);
  } else {
    spdlog::error("bootstrap from {} failed ({}) after {} and {} attempt(s): {}", options.peer,
                  BootstrapOutcomeName(result.outcome), took, result.attempts, result.status.ToString());
  }
  return result;
}

}  // namespace kvindex::server
