#include "server/kvindex_service.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/snapshot/body_export.h"
#include "core/snapshot/snapshot_format.h"
#include "google/protobuf/arena.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "proto/grpc_status.h"
#include "server/match_request_parser.h"
#include "server/prompt_validation.h"
#include "server/proto_convert.h"
#include "server/record_routing.h"
#include "spdlog/spdlog.h"

namespace kvindex::server {
namespace {

// Stack bytes that start each Match's protobuf arena.
constexpr size_t kMatchArenaStackBytes = 24 << 10;

// ExportIndex chunks: ExportIndexRequest.max_chunk_bytes when 0, its floor,
// and what a chunk's message adds to its body (tags, lengths, flags).
constexpr size_t kDefaultExportChunkBytes = 1 << 20;
constexpr size_t kMinExportChunkBytes = 1024;
constexpr size_t kChunkOverheadBytes = 64;

constexpr PodOutcome kAllOutcomes[] = {PodOutcome::kSubscribed, PodOutcome::kUpdated, PodOutcome::kRemoved,
                                       PodOutcome::kIgnored, PodOutcome::kRejected, PodOutcome::kRemovalPending};

// The manager logs every subscribe and unsubscribe; this adds the outcomes it
// does not log (rejected, ignored), so that each pod change is one line.
void LogAck(const PodAck& ack) {
  const spdlog::level::level_enum level = ack.outcome == PodOutcome::kRejected ||
                                                  ack.outcome == PodOutcome::kRemovalPending
                                              ? spdlog::level::warn
                                          : ack.outcome == PodOutcome::kIgnored ? spdlog::level::info
                                                                                : spdlog::level::debug;
  spdlog::log(level, "pod {}: {}{}{}", ack.pod.empty() ? "<no key>" : ack.pod, PodOutcomeName(ack.outcome),
              ack.reason.empty() ? "" : ": ", ack.reason);
}

// "4 pods: 2 subscribed, 1 ignored, 1 removed".
std::string SummarizeAcks(const std::vector<PodAck>& acks) {
  std::vector<std::string> parts;
  for (PodOutcome outcome : kAllOutcomes) {
    size_t n = 0;
    for (const PodAck& ack : acks) n += ack.outcome == outcome ? 1 : 0;
    if (n > 0) parts.push_back(absl::StrCat(n, " ", std::string(PodOutcomeName(outcome))));
  }
  return absl::StrCat(acks.size(), " pods", parts.empty() ? "" : ": ", absl::StrJoin(parts, ", "));
}

grpc::Status InvalidArgument(std::string message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message));
}

grpc::Status ShuttingDown() { return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"); }

// WorkerInfo.state of a worker that exists only through routing hints (a pod
// followed without KV events).
constexpr char kHintsOnlyState[] = "hints_only";

// Orders WorkerKeys (sorted by pod, then rank) against a pod key.
struct PodOrder {
  bool operator()(const WorkerKey& w, const std::string& pod) const { return w.pod < pod; }
  bool operator()(const std::string& pod, const WorkerKey& w) const { return pod < w.pod; }
};

}  // namespace

// Counts one unary call in in_flight_ from construction to destruction;
// refused() when the service had stopped accepting calls.
class KvIndexService::InFlight {
 public:
  explicit InFlight(KvIndexService* service) : service_(service) {
    service_->in_flight_.fetch_add(1);
    refused_ = !service_->accepting_.load();
  }
  ~InFlight() {
    if (service_->in_flight_.fetch_sub(1) == 1 && !service_->accepting_.load()) {
      absl::MutexLock lock(&service_->mu_);  // its release re-evaluates AwaitIdle's condition
    }
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

  bool refused() const { return refused_; }

 private:
  KvIndexService* const service_;
  bool refused_;
};

KvIndexService::KvIndexService(PrefixIndex* index, SubscriptionManager* pods, const BearerAuth* auth,
                               ServiceOptions options, KvIndexMetrics* metrics)
    : index_(index), pods_(pods), auth_(auth), options_(options), metrics_(metrics), started_(absl::Now()) {}

grpc::Status KvIndexService::TooLarge(size_t request_bytes) const {
  if (request_bytes <= options_.max_request_bytes) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      absl::StrCat("request of ", request_bytes, " bytes; the limit is ", options_.max_request_bytes,
                                   " (--max_message_bytes)"));
}

grpc::Status KvIndexService::Authorize(const grpc::ServerContextBase& context, bool always_guarded) const {
  absl::string_view authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  return ToGrpcStatus(auth_->Check(authorization, always_guarded));
}

grpc::ServerUnaryReactor* KvIndexService::Match(grpc::CallbackServerContext* context,
                                                const grpc::ByteBuffer* request_bytes,
                                                grpc::ByteBuffer* response_bytes) {
  if (options_.hold_match) {
    // The held call stays in flight until the seam destroys `answer`.
    auto call = std::make_shared<const InFlight>(this);
    grpc::ServerUnaryReactor* held = options_.hold_match(context, [this, call, context, request_bytes, response_bytes] {
      return AnswerMatchCall(*call, *context, *request_bytes, response_bytes);
    });
    if (held != nullptr) return held;
  }
  const InFlight call(this);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(AnswerMatchCall(call, *context, *request_bytes, response_bytes));
  return reactor;
}

grpc::Status KvIndexService::AnswerMatchCall(const InFlight& call, const grpc::CallbackServerContext& context,
                                             const grpc::ByteBuffer& request_bytes, grpc::ByteBuffer* response_bytes) {
  const absl::Time start = absl::Now();
  // The first block of the arena is on this stack: a 2k-token request and its
  // answer fit, longer ones spill into heap blocks freed with the arena.
  alignas(16) char first_block[kMatchArenaStackBytes];
  google::protobuf::ArenaOptions arena_options;
  arena_options.initial_block = first_block;
  arena_options.initial_block_size = sizeof(first_block);
  google::protobuf::Arena arena(arena_options);
  auto* request = google::protobuf::Arena::CreateMessage<v1::MatchRequest>(&arena);
  auto* response = google::protobuf::Arena::CreateMessage<v1::MatchResponse>(&arena);
  grpc::Status status = call.refused() ? ShuttingDown() : TooLarge(request_bytes.Length());
  if (status.ok()) status = Authorize(context, /*always_guarded=*/false);
  if (status.ok()) {
    if (ParseMatchRequest(request_bytes, request)) {
      status = AnswerMatch(*request, response);
    } else {
      status = InvalidArgument("MatchRequest does not parse (not a kvindex.v1.MatchRequest, or a string "
                               "field holds invalid UTF-8)");
    }
  }
  if (status.ok()) {
    bool own_buffer = false;
    status = grpc::SerializationTraits<v1::MatchResponse>::Serialize(*response, response_bytes, &own_buffer);
  }
  // Every call is counted here, once, whatever refused it: GetStats and the
  // metrics agree.
  (status.ok() ? matches_ : match_errors_).fetch_add(1, std::memory_order_relaxed);
  if (metrics_ != nullptr) {
    metrics_->OnMatch(ToAbslCode(status.error_code()), absl::Now() - start);
  }
  return status;
}

grpc::Status KvIndexService::AnswerMatch(const v1::MatchRequest& request, v1::MatchResponse* response) {
  if (grpc::Status valid = ValidatePrompt(PromptOf("Match", request), options_.max_match_tokens, options_.models);
      !valid.ok()) {
    return valid;
  }
  for (const auto& [medium, weight] : request.medium_weights()) {
    if (!std::isfinite(weight) || weight < 0) {
      return InvalidArgument(absl::StrCat("medium_weights[\"", medium, "\"] must be finite and >= 0"));
    }
  }
  MatchQueryStorage storage;
  absl::StatusOr<MatchResult> result = index_->Match(MatchQueryFromProto(request, &storage));
  if (!result.ok()) return ToGrpcStatus(result.status());
  MatchResultToProto(*result, response);
  return grpc::Status::OK;
}

grpc::Status KvIndexService::SyncPods(grpc::ServerContext* context,
                                      grpc::ServerReaderWriter<v1::PodUpdateAck, v1::PodUpdate>* stream) {
  if (grpc::Status status = Authorize(*context, /*always_guarded=*/true); !status.ok()) return status;
  {
    absl::MutexLock lock(&mu_);
    if (streams_cancelled_) return ShuttingDown();
    streams_.insert(context);
  }
  absl::Cleanup forget = [this, context] {
    absl::MutexLock lock(&mu_);
    streams_.erase(context);
  };
  // gRPC's peer() says "unknown" once the stream is closed: keep the address.
  const std::string peer = context->peer();
  spdlog::info("SyncPods stream from {} opened", peer);
  v1::PodUpdate update;
  uint64_t updates = 0;
  while (stream->Read(&update)) {
    if (grpc::Status too_large = TooLarge(update.ByteSizeLong()); !too_large.ok()) {
      spdlog::warn("SyncPods stream from {}: {}", peer, too_large.error_message());
      return too_large;
    }
    v1::PodUpdateAck ack = Apply(update);
    ack.set_update_index(updates++);
    if (!stream->Write(ack)) break;
  }
  spdlog::info("SyncPods stream from {} closed after {} updates", peer, updates);
  if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
  return grpc::Status::OK;
}

v1::PodUpdateAck KvIndexService::Apply(const v1::PodUpdate& update) {
  v1::PodUpdateAck proto;
  auto fill = [&proto](const PodAck& ack) {
    LogAck(ack);
    proto.set_pod(ack.pod);
    proto.set_outcome(PodOutcomeToProto(ack.outcome));
    proto.set_reason(ack.reason);
  };
  switch (update.update_case()) {
    case v1::PodUpdate::kUpsert:
      fill(pods_->Upsert(PodFromProto(update.upsert())));
      break;
    case v1::PodUpdate::kDelete: {
      const PodAck ack = pods_->Delete(update.delete_());
      ForgetRoutingHints(ack);
      fill(ack);
      break;
    }
    case v1::PodUpdate::kSnapshot: {
      std::vector<Pod> pods;
      pods.reserve(update.snapshot().pods_size());
      for (const v1::Pod& pod : update.snapshot().pods()) pods.push_back(PodFromProto(pod));
      std::vector<PodAck> acks = pods_->ApplySnapshot(pods);
      for (const PodAck& ack : acks) {
        LogAck(ack);
        ForgetRoutingHints(ack);
        *proto.add_pods() = PodAckToProto(ack);
      }
      proto.set_outcome(v1::POD_OUTCOME_UPDATED);
      proto.set_reason(SummarizeAcks(acks));
      break;
    }
    case v1::PodUpdate::UPDATE_NOT_SET:
      fill(PodAck{.pod = "", .outcome = PodOutcome::kRejected,
                  .reason = "empty PodUpdate: set one of upsert, delete, snapshot"});
      break;
  }
  return proto;
}

grpc::Status KvIndexService::ListPods(grpc::ServerContext* context, const v1::ListPodsRequest* request,
                                      v1::ListPodsResponse* response) {
  const InFlight call(this);
  if (call.refused()) return ShuttingDown();
  if (grpc::Status status = TooLarge(request->ByteSizeLong()); !status.ok()) return status;
  if (grpc::Status status = Authorize(*context, /*always_guarded=*/false); !status.ok()) return status;
  // One pod more than the page holds tells whether another page follows.
  const size_t page = request->page_size();
  std::vector<PodStatus> pods = pods_->ListPods(request->page_token(), page == 0 ? 0 : page + 1);
  const bool more = page != 0 && pods.size() > page;
  if (more) pods.pop_back();
  std::optional<std::vector<WorkerKey>> index_workers;  // sorted; read once, for the first pod without events
  for (const PodStatus& pod : pods) {
    v1::PodInfo* info = response->add_pods();
    *info = PodInfoToProto(pod);
    for (const WorkerStatus& worker : pod.workers) {
      *info->add_workers() =
          WorkerInfoToProto(worker, index_->GetWorkerStats(WorkerKey{info->key(), worker.dp_rank}));
    }
    if (!pod.workers.empty()) continue;
    // Not subscribed: its workers in the index exist through routing hints only.
    if (!index_workers.has_value()) index_workers = index_->WorkerKeys();
    const auto [first, last] = std::equal_range(index_workers->begin(), index_workers->end(), info->key(),
                                                PodOrder{});
    for (auto it = first; it != last; ++it) {
      WorkerStatus hinted;
      hinted.dp_rank = it->dp_rank;
      v1::WorkerInfo* w = info->add_workers();
      *w = WorkerInfoToProto(hinted, index_->GetWorkerStats(*it));
      w->set_state(std::string(kHintsOnlyState));
      w->set_speculative_ttl_ms(0);  // what ttl_ms = 0 gets for a pod without KV events: no deadline
    }
  }
  if (more) response->set_next_page_token(response->pods(response->pods_size() - 1).key());
  if (const size_t bytes = response->ByteSizeLong(); bytes > options_.max_response_bytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat(response->pods_size(), " pods take ", bytes, " bytes, more than one message may (",
                                     options_.max_response_bytes, ", --max_message_bytes): ask for fewer per page ",
                                     "(ListPodsRequest.page_size)"));
  }
  return grpc::Status::OK;
}

grpc::Status KvIndexService::GetStats(grpc::ServerContext* context, const v1::GetStatsRequest* request,
                                      v1::GetStatsResponse* response) {
  const InFlight call(this);
  if (call.refused()) return ShuttingDown();
  if (grpc::Status status = TooLarge(request->ByteSizeLong()); !status.ok()) return status;
  if (grpc::Status status = Authorize(*context, /*always_guarded=*/false); !status.ok()) return status;
  const IndexStats index = index_->Stats();
  response->set_workers(index.workers);
  response->set_blocks(index.blocks);
  response->set_entries(index.entries);
  response->set_memory_bytes(index.memory_bytes);
  response->set_evictions(index.evictions);
  response->set_unresolved_parents(index.unresolved_parents);
  for (const PodStatus& pod : pods_->ListPods()) {
    response->set_pods(response->pods() + 1);
    response->set_subscribed_pods(response->subscribed_pods() + (pod.subscribed ? 1 : 0));
    for (const WorkerStatus& w : pod.workers) {
#define KVINDEX_SUM_WORKER_COUNTER(name, help) response->set_##name(response->name() + w.name);
      KVINDEX_WORKER_COUNTERS(KVINDEX_SUM_WORKER_COUNTER)
#undef KVINDEX_SUM_WORKER_COUNTER
      response->set_incomplete_workers(response->incomplete_workers() + (w.history_complete ? 0 : 1));
    }
  }
  const ManagerStats manager = pods_->GetStats();
  response->set_removals_pending(manager.removals_pending);
  response->set_bind_messages(manager.bind_messages);
  response->set_bind_unrouted(manager.bind_unknown_senders);
  response->set_bind_bad_frames(manager.bind_bad_frames);
  response->set_matches(matches_.load(std::memory_order_relaxed));
  response->set_match_errors(match_errors_.load(std::memory_order_relaxed));
  response->set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - started_));
  return grpc::Status::OK;
}

grpc::Status KvIndexService::ExportIndex(grpc::ServerContext* context, const v1::ExportIndexRequest* request,
                                         grpc::ServerWriter<v1::IndexChunk>* writer) {
  const InFlight call(this);
  if (call.refused()) return ShuttingDown();
  if (grpc::Status status = TooLarge(request->ByteSizeLong()); !status.ok()) return status;
  // It reads the whole index: guarded whenever there is a token.
  if (grpc::Status status = Authorize(*context, /*always_guarded=*/true); !status.ok()) return status;
  const std::string peer = context->peer();
  size_t max_chunk = request->max_chunk_bytes() == 0 ? kDefaultExportChunkBytes : request->max_chunk_bytes();
  max_chunk = std::clamp<size_t>(max_chunk, kMinExportChunkBytes,
                                 std::max(kMinExportChunkBytes, options_.max_response_bytes - kChunkOverheadBytes));
  std::vector<Pod> pods;
  for (const PodStatus& pod : pods_->ListPods()) pods.push_back(pod.pod);
  v1::IndexChunk chunk;
  chunk.set_format_version(kSnapshotFormatVersion);
  absl::StatusOr<SnapshotWriteStats> stats = ExportIndexBody(
      *index_, pods, BodyExportOptions{.max_piece_bytes = max_chunk},
      [&](std::string_view piece, bool record_continues) -> absl::Status {
        if (context->IsCancelled()) return absl::CancelledError("export cancelled");
        chunk.set_body(piece.data(), piece.size());
        chunk.set_record_continues(record_continues);
        if (!writer->Write(chunk)) return absl::CancelledError("export cancelled: the stream to the peer broke");
        return absl::OkStatus();
      });
  if (metrics_ != nullptr) metrics_->OnIndexExport(stats.ok());
  if (!stats.ok()) {
    spdlog::warn("ExportIndex to {}: {}", peer, stats.status().ToString());
    return ToGrpcStatus(stats.status());
  }
  spdlog::info("ExportIndex to {}: {} pods, {} workers, {} entries, {} bytes in {} (longest pause of one worker {})",
               peer, stats->pods, stats->workers, stats->entries, stats->bytes,
               absl::FormatDuration(absl::Trunc(stats->duration, absl::Microseconds(100))),
               absl::FormatDuration(absl::Trunc(stats->longest_pause, absl::Microseconds(1))));
  return grpc::Status::OK;
}

void KvIndexService::ForgetRoutingHints(const PodAck& ack) {
  // A subscribed pod's workers are removed by the manager; a pod without KV
  // events has workers only through RecordRouting, dropped here.
  if (ack.outcome == PodOutcome::kRemoved || ack.outcome == PodOutcome::kRemovalPending) index_->RemovePod(ack.pod);
}

grpc::ServerUnaryReactor* KvIndexService::RecordRouting(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request_bytes,
                                                        grpc::ByteBuffer* response_bytes) {
  const InFlight call(this);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(AnswerRecordRoutingCall(call, *context, *request_bytes, response_bytes));
  return reactor;
}

grpc::Status KvIndexService::AnswerRecordRoutingCall(const InFlight& call, const grpc::CallbackServerContext& context,
                                                     const grpc::ByteBuffer& request_bytes,
                                                     grpc::ByteBuffer* response_bytes) {
  if (call.refused()) return ShuttingDown();
  if (grpc::Status status = TooLarge(request_bytes.Length()); !status.ok()) return status;
  if (grpc::Status status = Authorize(context, /*always_guarded=*/false); !status.ok()) return status;
  grpc::Slice storage;
  absl::string_view bytes;
  v1::RecordRoutingRequest request;
  if (!ReceivedBytes(request_bytes, storage, bytes) || bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return InvalidArgument("RecordRoutingRequest does not parse (not a kvindex.v1.RecordRoutingRequest, or a "
                           "string field holds invalid UTF-8)");
  }
  v1::RecordRoutingResponse response;
  grpc::Status status =
      AnswerRecordRouting(request, *index_, *pods_, options_.max_match_tokens, options_.models, &response);
  if (!status.ok()) return status;
  bool own_buffer = false;
  return grpc::SerializationTraits<v1::RecordRoutingResponse>::Serialize(response, response_bytes, &own_buffer);
}

void KvIndexService::StopAccepting() {
  accepting_.store(false);
  absl::MutexLock lock(&mu_);
  streams_cancelled_ = true;
  for (grpc::ServerContext* context : streams_) context->TryCancel();
}

bool KvIndexService::AwaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(
      absl::Condition(+[](std::atomic<int64_t>* in_flight) { return in_flight->load() == 0; }, &in_flight_),
      deadline);
}

}  // namespace kvindex::server
