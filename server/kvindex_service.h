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
// The others stay synchronous: SyncPods blocks on its stream by design.
//
// Thread safety: gRPC calls every handler concurrently; all of them are safe.

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/kvindex_metrics.h"
#include "core/prefix_index.h"
#include "core/subscription_manager.h"
#include "kvindex/v1/kvindex.grpc.pb.h"
#include "server/bearer_auth.h"

namespace kvindex::server {

struct ServiceOptions {
  // Most token_ids (or block_hashes) one Match may carry.
  uint32_t max_match_tokens = 1000000;
};

class KvIndexService final : public v1::KvIndex::WithRawCallbackMethod_Match<v1::KvIndex::Service> {
 public:
  // `index`, `pods`, `auth` and `metrics` are not owned and must outlive the
  // service; every Match is counted (by code) and timed in `metrics` unless null.
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

  // Cancels every open SyncPods stream and refuses new ones (UNAVAILABLE), so
  // that a server shutdown does not wait for control planes to hang up.
  void CancelStreams() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  grpc::Status Authorize(const grpc::ServerContextBase& context, bool sync_pods) const;
  // Match of an authorized, parsed request, without the metrics.
  grpc::Status AnswerMatch(const v1::MatchRequest& request, v1::MatchResponse* response);
  v1::PodUpdateAck Apply(const v1::PodUpdate& update);

  // Constant after construction.
  PrefixIndex* const index_;
  SubscriptionManager* const pods_;
  const BearerAuth* const auth_;
  const ServiceOptions options_;
  KvIndexMetrics* const metrics_;
  const absl::Time started_;

  std::atomic<uint64_t> matches_{0};
  std::atomic<uint64_t> match_errors_{0};

  absl::Mutex mu_;
  bool streams_cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<grpc::ServerContext*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvindex::server
