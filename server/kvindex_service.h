#pragma once

// KvIndexService: the kvindex.v1.KvIndex gRPC service. It adapts only: checks
// the caller's token, converts protobuf <-> core types, and delegates to the
// PrefixIndex (Match, stats) and the SubscriptionManager (pods).
//
// Match, the hot path, uses gRPC's callback API on raw bytes: it runs inline
// on gRPC's event threads, without the sync server's hand-off to a worker
// thread, and parses the request into a per-call arena (no malloc per token
// array or map entry). Raw bytes also let a request that does not parse get
// INVALID_ARGUMENT (gRPC's typed callback handler answers UNIMPLEMENTED).
// RecordRouting, called by gateways beside Match, is served the same way: on
// gRPC's synchronous pool it had a ~100 ms p99.9 at 8+ calls in flight and
// twice the CPU per call (BENCHMARKS.md, "Routing hints").
// The others stay synchronous: SyncPods blocks on its stream by design.
//
// Thread safety: gRPC calls every handler concurrently; all of them are safe.

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/ingest/model_filter.h"
#include "core/ingest/subscription_manager.h"
#include "kvindex/v1/kvindex.grpc.pb.h"
#include "server/bearer_auth.h"
#include "server/kvindex_metrics.h"

namespace kvindex::server {

struct ServiceOptions {
  // Most token_ids (or block_hashes) one Match may carry.
  uint32_t max_match_tokens = 1000000;
  // Largest response message (the server's --max_message_bytes): a ListPods of
  // every pod that would not fit is refused, asking for pages.
  size_t max_response_bytes = 16 << 20;
  // Largest request message (--max_message_bytes), checked here rather than by
  // gRPC, whose refusal the service would never see: a larger request is
  // RESOURCE_EXHAUSTED, and a Match so refused is counted like any other.
  size_t max_request_bytes = 16 << 20;
  // The models this replica answers for (--models); Match for another is
  // FAILED_PRECONDITION naming the flag.
  ModelFilter models;
  // Test seam, empty in production: sees each Match first. It returns null to
  // let the Match go on at once, or a reactor of its own that holds the call
  // (never blocking gRPC's thread) and later Finishes it, from any thread,
  // with `answer()` (the Match, answered as usual) or a status of its own. The
  // call counts as in flight (see AwaitIdle) until the seam destroys `answer`.
  // kvindex-server sets it only with its hidden --testonly_match_latch_dir
  // (server/match_latch.h).
  std::function<grpc::ServerUnaryReactor*(grpc::CallbackServerContext* context, std::function<grpc::Status()> answer)>
      hold_match;
};

class KvIndexService final
    : public v1::KvIndex::WithRawCallbackMethod_Match<
          v1::KvIndex::WithRawCallbackMethod_RecordRouting<v1::KvIndex::Service>> {
 public:
  // `index`, `pods`, `auth` and `metrics` are not owned and must outlive the
  // service; every Match is counted (by code) and timed in `metrics` unless null,
  // and counted in GetStats (matches, or match_errors when not OK).
  KvIndexService(PrefixIndex* index, SubscriptionManager* pods, const BearerAuth* auth,
                 ServiceOptions options, KvIndexMetrics* metrics = nullptr);
  KvIndexService(const KvIndexService&) = delete;
  KvIndexService& operator=(const KvIndexService&) = delete;

  // kvindex.v1.KvIndex; contracts in proto/kvindex/v1/kvindex.proto.
  // Match: a serialized v1::MatchRequest in, a v1::MatchResponse out.
  grpc::ServerUnaryReactor* Match(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::Status SyncPods(grpc::ServerContext* context,
                        grpc::ServerReaderWriter<v1::PodUpdateAck, v1::PodUpdate>* stream) override;
  grpc::Status ListPods(grpc::ServerContext* context, const v1::ListPodsRequest* request,
                        v1::ListPodsResponse* response) override;
  grpc::Status GetStats(grpc::ServerContext* context, const v1::GetStatsRequest* request,
                        v1::GetStatsResponse* response) override;
  // RecordRouting (server/record_routing.h): a serialized
  // v1::RecordRoutingRequest in, a v1::RecordRoutingResponse out; counted in
  // flight like the other unary calls.
  grpc::ServerUnaryReactor* RecordRouting(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  // Counts as in flight (AwaitIdle waits for it) until its last chunk is
  // written; cancelled with the call (the peer gone, or the server's stop deadline).
  grpc::Status ExportIndex(grpc::ServerContext* context, const v1::ExportIndexRequest* request,
                           grpc::ServerWriter<v1::IndexChunk>* writer) override;

  // The first step of a shutdown: from its return on, every new kvindex.v1
  // call is refused with UNAVAILABLE, and every open SyncPods stream is
  // cancelled (a shutdown does not wait for control planes to hang up).
  // Unary calls already in flight go on. Idempotent.
  void StopAccepting() ABSL_LOCKS_EXCLUDED(mu_);

  // After StopAccepting: waits until no unary call (Match, ListPods, GetStats)
  // and no ExportIndex is in flight, or until `deadline`. True when none is.
  [[nodiscard]] bool AwaitIdle(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  class InFlight;  // counts one unary call in in_flight_, or refuses it

  // `always_guarded`: SyncPods, ExportIndex (BearerAuth::Check).
  grpc::Status Authorize(const grpc::ServerContextBase& context, bool always_guarded) const;
  // RESOURCE_EXHAUSTED when a request of `request_bytes` exceeds max_request_bytes.
  grpc::Status TooLarge(size_t request_bytes) const;
  // The Match of a call (counted in flight by `call`), metrics included: the
  // status to finish the call with.
  grpc::Status AnswerMatchCall(const InFlight& call, const grpc::CallbackServerContext& context,
                               const grpc::ByteBuffer& request_bytes, grpc::ByteBuffer* response_bytes);
  // The RecordRouting of a call (counted in flight by `call`): the status to
  // finish the call with.
  grpc::Status AnswerRecordRoutingCall(const InFlight& call, const grpc::CallbackServerContext& context,
                                       const grpc::ByteBuffer& request_bytes, grpc::ByteBuffer* response_bytes);
  // Match of an authorized, parsed request, without the metrics.
  grpc::Status AnswerMatch(const v1::MatchRequest& request, v1::MatchResponse* response);
  v1::PodUpdateAck Apply(const v1::PodUpdate& update);
  // After a pod was removed (`ack`): drops the workers RecordRouting created
  // for it (a pod without KV events has no others).
  void ForgetRoutingHints(const PodAck& ack);

  // Constant after construction.
  PrefixIndex* const index_;
  SubscriptionManager* const pods_;
  const BearerAuth* const auth_;
  const ServiceOptions options_;
  KvIndexMetrics* const metrics_;
  const absl::Time started_;

  std::atomic<uint64_t> matches_{0};
  std::atomic<uint64_t> match_errors_{0};

  // Unary calls between their start and their answer, and whether new calls are
  // refused. Sequentially consistent: a call counts itself before it reads
  // accepting_, and StopAccepting clears accepting_ before AwaitIdle reads the
  // count, so AwaitIdle never misses a call that was let in. A call that ends
  // after StopAccepting takes mu_ once, which wakes AwaitIdle.
  std::atomic<int64_t> in_flight_{0};
  std::atomic<bool> accepting_{true};

  absl::Mutex mu_;
  bool streams_cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<grpc::ServerContext*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvindex::server
